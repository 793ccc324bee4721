"""The README's demo (examples/demo_project) run end to end, as a newcomer runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services import require

ROOT = Path(__file__).resolve().parent.parent
RUN_DEMO = ROOT / 'examples' / 'demo_project' / 'run_demo.py'


def run_demo(*args: str, timeout: float = 90.0) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != 'DJANGO_SETTINGS_MODULE'}
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, str(RUN_DEMO), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as demo:
        try:
            out, err = demo.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            demo.send_signal(signal.SIGTERM)  # the demo stops its worker, then exits
            out, err = demo.communicate(timeout=30)
            pytest.fail(f'the demo did not finish in {timeout} s:\n{out}\n{err}')
    took = time.monotonic() - started
    return subprocess.CompletedProcess(demo.args, demo.returncode, out, err), took


def sections(output: str) -> dict[str, str]:
    """The demo's output split by step title ('create on the master', ...)."""
    parts = re.split(r'^== step \d+: (.+?) =+$', output, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def replica_rows(section: str, title: str) -> list[str]:
    """The REPLICA half of the rows of one table (``title``) in a step's output."""
    block = section.split(f'  {title}\n', 1)[1].split('\n\n', 1)[0]
    rows = []
    for line in block.splitlines()[3:]:  # MASTER/REPLICA, column names, dashes
        if ' |  ' in line or ' !=  ' in line:
            rows.append(re.split(r' \| | != ', line, maxsplit=1)[1].split())
    return rows


def check_converged_output(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert 'Converged: the replica matches the master after every step.' in out
    steps = sections(out)
    assert list(steps) == [
        'create on the master',
        'update on the master',
        'sync from the master',
        'delete on the master',
    ]
    products = 'products (serializer + tracked fields -> mapped replica)'
    customers = 'customers (custom-serialization replica)'
    categories = 'categories (default replica)'
    # Created: mapped replica (title), serializer field (category name), no previous price.
    assert replica_rows(steps['create on the master'], products) == [
        ['1', 'Dune', '9.99', '-', 'Books', '0'],
        ['2', 'Chess', '25.00', '-', 'Games', '0'],
        ['3', 'Catan', '42.50', '-', 'Games', '0'],
    ]
    assert replica_rows(steps['create on the master'], customers) == [
        ['1', 'Ada', 'Lovelace', 'example.org', '0'],
        ['2', 'Alan', 'Turing', 'bletchley.example', '0'],
    ]
    # Updated: the tracked field's previous value reached the replica; the rename is not yet
    # on the products (marked '!='), until the SYNC step.
    update = steps['update on the master']
    assert replica_rows(update, products)[0] == ['1', 'Dune', '7.49', '9.99', 'Books', '1']
    assert update.count(' !=  ') == 2
    assert replica_rows(steps['sync from the master'], products)[1:] == [
        ['2', 'Chess', '25.00', '-', 'Board', 'games', '0'],
        ['3', 'Catan', '42.50', '-', 'Board', 'games', '0'],
    ]
    # Deleted rows are gone; nothing differs at the end.
    delete = steps['delete on the master']
    assert [r[1] for r in replica_rows(delete, products)] == ['Dune', 'Catan']
    assert replica_rows(delete, customers) == [
        ['1', 'Ada', 'Lovelace', 'analytical-engine.example', '1']
    ]
    assert replica_rows(delete, categories) == [['1', 'Books', '0'], ['2', 'Board', 'games', '1']]
    assert ' !=  ' not in delete
    assert out.count('replica converged with the master in') == 3


def test_demo_converges_without_a_broker():
    """The default demo (Kombu filesystem://, two processes) converges within 30 s, exit 0."""
    proc, took = run_demo('--timeout', '30')
    check_converged_output(proc)
    assert 'filesystem:// (KombuTransport' in proc.stdout
    assert took < 30 + 5, f'the demo took {took:.1f} s'  # interpreter start and cleanup


def test_demo_over_rabbitmq():
    """With --broker amqp://... the same demo runs over RabbitMQ and cleans up its queue."""
    require('rabbitmq')
    proc, _ = run_demo('--broker', 'amqp://guest:guest@127.0.0.1:5672//', '--timeout', '60')
    check_converged_output(proc)
    assert 'amqp://guest:****@127.0.0.1:5672// (RabbitMQTransport' in proc.stdout
    assert 'guest:guest' not in proc.stdout


def test_demo_reports_a_replica_that_does_not_converge():
    """A run that cannot converge in time exits 1 and says why (the test can fail)."""
    proc, _ = run_demo('--timeout', '0.5')
    assert proc.returncode == 1
    assert 'DEMO FAILED' in proc.stderr


@pytest.mark.parametrize('service', ['master_service', 'replica_service'])
def test_demo_services_have_their_migrations(service, tmp_path):
    """Each demo service's migrations match its models (makemigrations --check is clean)."""
    env = {k: v for k, v in os.environ.items() if k != 'DJANGO_SETTINGS_MODULE'}
    env['DEMO_DATA_DIR'] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, 'manage.py', 'makemigrations', '--check', '--dry-run'],
        cwd=ROOT / 'examples' / 'demo_project' / service,
        env={**env, 'PYTHONPATH': str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
