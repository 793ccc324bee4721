"""KombuTransport over ``filesystem://``: master and replica in two processes on one machine.

Kombu's filesystem transport routes a topic exchange across processes when every process
shares the bindings folder (``control_folder``) and the message folder; each process uses the
same folder as ``data_folder_in`` and ``data_folder_out``, because a worker publishes its
retries and dead letters to queues it also reads.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport.kombu import KombuTransport
from tests.kombu_fixtures import kombu_settings

ROOT = Path(__file__).resolve().parent.parent

CONSUMER = r"""
import json, threading
import django
django.setup()
from django.core.management import call_command
call_command('migrate', run_syncdb=True, verbosity=0)
from dj_cqrs import signals
from dj_cqrs.transport.kombu_consumer import KombuWorker
from tests.dj_replica.models import GoldenParentReplica

worker = KombuWorker()
events = []

def record(sender, signal, **kwargs):
    events.append([name for name in dir(signals) if getattr(signals, name) is signal][0])
    if 'message_dead_lettered' in events and GoldenParentReplica.objects.exists():
        worker.stop()

for signal in (signals.message_applied, signals.message_failed, signals.message_delayed,
               signals.message_requeued, signals.message_dead_lettered):
    signal.connect(record, weak=False)

def announce():
    if worker.consuming.wait(20):
        print('ready', flush=True)

threading.Thread(target=announce, daemon=True).start()
timer = threading.Timer(30, worker.stop)
timer.start()
worker.run(handle_signals=True)
timer.cancel()
rows = list(GoldenParentReplica.objects.values_list('id', 'name'))
print(json.dumps({'events': events, 'rows': rows}), flush=True)
"""


def read_line(proc: subprocess.Popen, deadline: float) -> str:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    return ''


@pytest.fixture
def filesystem_settings(tmp_path):
    messages = tmp_path / 'messages'
    messages.mkdir()
    options = {
        'data_folder_in': str(messages),
        'data_folder_out': str(messages),
        'control_folder': str(tmp_path / 'control'),
    }
    settings = kombu_settings('filesystem://', 'fs', transport_options=options)
    with override_settings(CQRS=settings):
        yield settings, tmp_path
    KombuTransport.clean_connection()


def test_master_and_replica_processes_share_the_whole_lifecycle(filesystem_settings):
    """A replica process applies, retries and dead-letters what the master process publishes."""
    settings, folder = filesystem_settings
    env = {
        **os.environ,
        'DJANGO_SETTINGS_MODULE': 'tests.kombu_fs_settings',
        'KOMBU_FS_DB': str(folder / 'replica.sqlite3'),
        'KOMBU_FS_CQRS': json.dumps(settings),
        'PYTHONPATH': str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, '-c', CONSUMER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 45
        assert read_line(proc, deadline).strip() == 'ready'
        expires = timezone.now() + datetime.timedelta(days=1)
        data = {'id': 1, 'name': 'over files', 'cqrs_revision': 0}
        data['cqrs_updated'] = '2024-02-29 13:45:30+00:00'
        KombuTransport.produce(TransportPayload('SAVE', 'golden_parent', data, 1, expires=expires))
        KombuTransport.produce(
            TransportPayload('SAVE', 'golden_fail', {**data, 'name': 'x'}, 1, expires=expires)
        )
        result = json.loads(read_line(proc, deadline) or '{}')
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()

    assert result['rows'] == [[1, 'over files']], stderr
    assert sorted(result['events']) == sorted(
        [
            'message_applied',
            'message_failed',
            'message_delayed',
            'message_requeued',
            'message_failed',
            'message_dead_lettered',
        ]
    ), stderr
    (dead,) = KombuTransport.dead_letters_dump()
    assert (json.loads(dead)['cqrs_id'], json.loads(dead)['retries']) == ('golden_fail', 1)


@pytest.mark.django_db
def test_worker_warns_when_it_would_not_read_its_own_retries(tmp_path, cqrs_log):
    """Different data_folder_in and data_folder_out: the worker says its retries would be lost."""
    import threading

    from dj_cqrs.transport.kombu_consumer import KombuWorker

    (tmp_path / 'in').mkdir()
    (tmp_path / 'out').mkdir()
    options = {
        'data_folder_in': str(tmp_path / 'in'),
        'data_folder_out': str(tmp_path / 'out'),
        'control_folder': str(tmp_path / 'control'),
    }
    with override_settings(CQRS=kombu_settings('filesystem://', 'fs', transport_options=options)):
        worker = KombuWorker()
        threading.Thread(target=lambda: worker.consuming.wait(10) and worker.stop()).start()
        worker.run()
    assert any("needs the same folder in CQRS['transport_options']" in line for line in cqrs_log())
