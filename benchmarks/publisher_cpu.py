#!/usr/bin/env python
"""CPU of the asynchronous publisher per message, in one process (no database, no worker).

    .venv/bin/python benchmarks/publisher_cpu.py [CHECKOUT]

Publishes 3 x 20,000 messages through ``RabbitMQTransport.produce`` (async confirms) to a
private exchange on the broker at 127.0.0.1:5672, waits for every confirm, and prints the
process's CPU (``resource.getrusage``, every thread) per message and the rate. CHECKOUT (default:
this one) is the dj_cqrs checkout to measure: give a second worktree to compare two versions on
the same loaded machine, where wall-clock rates mean little but CPU per message holds.
"""

import os
import resource
import sys
import time

root = (
    sys.argv[1]
    if len(sys.argv) > 1
    else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
sys.path.insert(0, root)
os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'
import django  # noqa: E402  (the checkout and settings first)

django.setup()
from django.conf import settings  # noqa: E402  (the checkout and settings first)

import dj_cqrs  # noqa: E402  (the checkout and settings first)
from dj_cqrs.transport import async_publisher  # noqa: E402  (the checkout and settings first)
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport  # noqa: E402  (the checkout and settings first)
from tests.rabbit_capture import capture_queue, payload  # noqa: E402  (the checkout and settings first)

assert dj_cqrs.__file__.startswith(root), dj_cqrs.__file__


def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


N = 20000
with capture_queue('cqrs_cpu', ['golden_parent']) as drain:
    settings.CQRS = {
        'transport': 'dj_cqrs.transport.RabbitMQTransport',
        'url': 'amqp://guest:guest@127.0.0.1:5672/%2F',
        'exchange': drain.exchange,
        'queue': 'svc',
        'master': {'CQRS_PUBLISH_CONFIRMS': 'async'},
    }
    from dj_cqrs import conf

    conf.reset()
    items = [payload(i) for i in range(N)]
    for p in items[:200]:
        RabbitMQTransport.produce(p)
    async_publisher.flush(30)
    res = []
    for _ in range(3):
        c0 = cpu()
        t0 = time.perf_counter()
        for p in items:
            RabbitMQTransport.produce(p)
            if len(async_publisher._publisher._queue) > 5000:
                time.sleep(0.001)
        assert async_publisher.flush(60)
        res.append(((cpu() - c0) / N * 1e6, N / (time.perf_counter() - t0)))
        drain.count()
    print(
        os.path.basename(root),
        'cpu us/msg',
        [round(r[0], 1) for r in res],
        'msg/s',
        [round(r[1]) for r in res],
    )
