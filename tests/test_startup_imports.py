"""What a process imports at start-up: a replica worker loads no master or outbox code, and
the system checks load no broker library the settings do not name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import django
django.setup()
import dj_cqrs.management.commands.cqrs_consume, dj_cqrs.consumer.workers
import dj_cqrs.consumer.handler, dj_cqrs.consumer.batch, dj_cqrs.controller.consumer
import importlib
from dj_cqrs.transport import get_transport
get_transport()
importlib.import_module('dj_cqrs.transport.' + CONSUMER)
import sys
print(*sorted(sys.modules))
"""

CHECK = """
import sys
import django
django.setup()
from django.core import checks
errors = [m for m in checks.run_checks() if m.level >= checks.ERROR]
assert not errors, errors
print(' '.join(sorted({name.split('.')[0] for name in sys.modules} & {'pika', 'kombu'})))
"""


def _run(code: str, transport: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        'DJANGO_SETTINGS_MODULE': 'tests.replica_only_settings',
        'CQRS_TEST_TRANSPORT': f'dj_cqrs.transport.{transport}',
        'PYTHONPATH': str(ROOT),
    }
    return subprocess.run(
        [sys.executable, *options, '-c', code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _imported(importtime_output: str) -> set[str]:
    """Module names from ``python -X importtime`` lines ("import time: self | cum | name")."""
    names = set()
    for line in importtime_output.splitlines():
        if line.startswith('import time:') and line.count('|') == 2:
            names.add(line.rsplit('|', 1)[1].strip())
    return names


@pytest.mark.parametrize(
    ('transport', 'consumer'),
    [('RabbitMQTransport', 'rabbit_consumer'), ('KombuTransport', 'kombu_consumer')],
)
def test_replica_worker_loads_no_master_or_outbox_module(transport, consumer):
    """A replica-only ``cqrs_consume`` worker imports the consumer and the transport only."""
    code = WORKER.replace('CONSUMER', repr(consumer))
    result = _run(code, transport, '-X', 'importtime')
    imported = _imported(result.stderr) | set(result.stdout.split())
    assert f'dj_cqrs.transport.{consumer}' in imported  # the probe saw the worker's imports
    assert 'dj_cqrs.consumer.batch' in imported
    loaded = sorted(
        name for name in imported if name.startswith(('dj_cqrs.master', 'dj_cqrs.outbox'))
    )
    assert loaded == []


@pytest.mark.parametrize(
    ('transport', 'libraries'),
    [('InProcessTransport', ''), ('RabbitMQTransport', 'pika'), ('KombuTransport', 'kombu')],
)
def test_system_checks_import_only_the_configured_broker_library(transport, libraries):
    """``manage.py check`` loads pika only for RabbitMQTransport, kombu only for Kombu."""
    assert _run(CHECK, transport).stdout.strip() == libraries


SETUP = """
import sys
import django
django.setup()
import dj_cqrs.management.commands.cqrs_bulk_dump
print(' '.join(sorted({name.split('.')[0] for name in sys.modules} & {'pika', 'kombu'})))
"""


@pytest.mark.parametrize(
    ('transport', 'libraries'), [('RabbitMQTransport', 'pika'), ('KombuTransport', 'kombu')]
)
def test_start_up_loads_only_the_configured_broker_library(transport, libraries):
    """A command that never talks to the broker (``cqrs_bulk_dump``) loads the configured
    transport's library (its options are checked at start-up) and not the other one."""
    assert _run(SETUP, transport).stdout.strip() == libraries


def test_start_up_refuses_a_connection_option_that_cannot_be_honoured():
    """A bad option in the broker URL stops the process when Django starts (dj_cqrs.E030,
    naming the option), not at the first publish."""
    env = {
        **os.environ,
        'DJANGO_SETTINGS_MODULE': 'tests.replica_only_settings',
        'CQRS_TEST_URL': 'amqp://guest:guest@127.0.0.1:5672/%2F?tcp_options=nonsense',
        'PYTHONPATH': str(ROOT),
    }
    started = subprocess.run(
        [sys.executable, '-c', 'import django; django.setup()'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode != 0
    assert 'dj_cqrs.E030' in started.stderr and 'tcp_options' in started.stderr
