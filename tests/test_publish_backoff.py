"""One retry policy for every publisher, and a Kombu producer that backs off without its lock."""

from __future__ import annotations

import threading
import time

import pytest
from django.test import override_settings

from dj_cqrs.exceptions import PublishError
from dj_cqrs.transport import retry
from dj_cqrs.transport.kombu import KombuTransport
from tests.kombu_fixtures import kombu_settings
from tests.test_kombu_connections import free_port, parent


def test_backoff_is_immediate_then_doubling_up_to_the_cap():
    assert [retry.backoff(n) for n in range(6)] == [0.0, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert retry.backoff(10_000) == retry.CAP  # no overflow for a long outage


def test_kombu_threads_do_not_queue_behind_a_backing_off_one():
    """During an outage every thread of a web worker backs off on its own: two threads that
    publish at once to a dead broker both give up after one back-off sequence (~1.2 s with
    3 retries), not one after the other (~2.4 s, when the sleep held the producer lock)."""
    settings = kombu_settings(f'amqp://guest:guest@127.0.0.1:{free_port()}/', 'down')
    settings['master'] = {**settings.get('master', {}), 'CQRS_PUBLISH_RETRIES': 3}
    sequence = sum(retry.backoff(n) for n in range(3))
    done: list[float] = []

    def publish(pk: int) -> None:
        with pytest.raises(PublishError):
            KombuTransport.produce(parent(pk))
        done.append(time.monotonic())

    with override_settings(CQRS=settings):
        began = time.monotonic()
        threads = [threading.Thread(target=publish, args=(pk,)) for pk in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(done) == 2
    assert max(done) - began < sequence * 1.6, (max(done) - began, sequence)
