"""``cqrs_status`` on a real replica service while its worker stops and restarts."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from integration_tests import rabbit
from integration_tests.harness import PYTHON, Service

PARENT = 'replicaapp_goldenparentreplica'

SAVER = """
import time
from masterapp.models import GoldenParent
end = time.monotonic() + {seconds}
pk = {first}
while time.monotonic() < end:
    GoldenParent.objects.create(id=pk, name='row %d' % pk)
    pk += 1
    time.sleep({pause})
"""


class Saver:
    """The master saving a new row every ``pause`` seconds, in its own process (bounded)."""

    def __init__(
        self,
        master: Service,
        log: Path,
        env: dict[str, str],
        seconds: float = 90,
        pause: float = 0.2,
    ):
        self._log = open(log, 'wb')  # noqa: SIM115 (closed in stop())
        code = SAVER.format(seconds=seconds, first=1, pause=pause)
        self.proc = subprocess.Popen(
            [PYTHON, 'manage.py', 'shell', '-c', code],
            cwd=master.directory,
            env=master.environ(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def private_exchange():
    """Settings (env) for an exchange of this test only: other tests' messages never arrive."""
    name = f'it_status_{uuid.uuid4().hex[:8]}'
    yield {'CQRS_IT_EXTRA': json.dumps({'exchange': name})}
    with contextlib.suppress(Exception), rabbit.channel() as channel:
        channel.exchange_delete(name)


def status(replica: Service, env: dict[str, str], *args: str) -> tuple[int, dict, str]:
    """(exit code, parsed --json output, stderr) of the replica's ``cqrs_status``."""
    proc = replica.manage('cqrs_status', '--json', *args, env=env, timeout=60)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def status_exiting(replica: Service, env: dict[str, str], code: int, *args: str):
    """``status(...)`` if ``cqrs_status`` exits with ``code``, else None (for wait_until)."""
    result = status(replica, env, *args)
    return result if result[0] == code else None


def _counted(result, at_least: int):
    """``result`` of ``status_exiting`` if it counts ``at_least`` golden_parent messages."""
    if result is None:
        return None
    counts = [i['applied_count'] for i in result[1]['cqrs_ids'] if i['cqrs_id'] == 'golden_parent']
    return result if counts and counts[0] >= at_least else None


def replica_rows(replica: Service) -> int:
    return replica.query(f'SELECT count(*) FROM {PARENT}')[0][0]


def master_rows(master: Service) -> int:
    return master.query('SELECT count(*) FROM masterapp_goldenparent')[0][0]


@pytest.mark.slow
def test_status_follows_a_stopped_and_restarted_worker(
    master, replica, consumer, wait_until, tmp_path, private_exchange
):
    """Worker stopped: queue and lag grow and --max-lag fails; restarted: both back near zero."""
    env = private_exchange
    worker = consumer(env=env)
    saver = Saver(master, tmp_path / 'saver.log', env)
    try:
        # Running: nothing waits, the replica is a fraction of a second behind.
        wait_until(lambda: replica_rows(replica) >= 5, timeout=30, what='first rows applied')
        # The worker writes its state once a second (CQRS_STATE_FLUSH_INTERVAL): the count
        # catches up with the rows within that.
        healthy = wait_until(
            lambda: _counted(status_exiting(replica, env, 0, '--max-lag', '2'), 5),
            timeout=30,
            what='cqrs_status healthy, with 5 applied, while the worker runs',
        )
        _, running, _ = healthy
        assert running['queue']['consumers'] == 1
        assert running['lag'] is not None and running['lag'] < 2
        (parent,) = [i for i in running['cqrs_ids'] if i['cqrs_id'] == 'golden_parent']
        assert parent['applied_count'] >= 5 and parent['last_lag'] < 2

        # Stopped: the queue fills and the lag grows with every second.
        assert worker.stop() is not None
        wait_until(
            lambda: status(replica, env)[1]['queue']['messages'] >= 5, timeout=20, what='a backlog'
        )
        _, first, _ = status(replica, env)
        wait_until(
            lambda: status(replica, env)[1]['queue']['messages'] >= first['queue']['messages'] + 5,
            timeout=20,
            what='the backlog growing',
        )
        _, second, _ = status(replica, env)
        assert second['queue']['consumers'] == 0
        assert second['lag'] > first['lag'] > 0
        code, _, err = wait_until(
            lambda: status_exiting(replica, env, 1, '--max-lag', '2'),
            timeout=20,
            what='--max-lag 2 failing',
        )
        assert err.startswith('cqrs_status: replication lag ')
        assert err.rstrip().endswith('exceeds --max-lag 2')
        plain = replica.manage('cqrs_status', '--max-lag', '2', '--max-queue', '10', env=env)
        assert plain.returncode == 1
        assert 'waiting, 0 consumer(s)' in plain.stdout
        assert 'more than --max-queue 10' in plain.stderr

        # Restarted: it catches up; queue and lag are back near zero, the check passes again.
        consumer(env=env)
        _, caught_up, _ = wait_until(
            lambda: status_exiting(replica, env, 0, '--max-lag', '2', '--max-queue', '3'),
            timeout=60,
            what='cqrs_status healthy after the restart',
        )
        assert caught_up['queue']['consumers'] == 1
        assert caught_up['queue']['messages'] <= 3
        assert caught_up['lag'] < 2
    finally:
        saver.stop()
    # Nothing was lost on the way.
    total = master_rows(master)
    wait_until(lambda: replica_rows(replica) == total, timeout=30, what=f'{total} rows replicated')

    def applied() -> int:
        (item,) = [
            i for i in status(replica, env)[1]['cqrs_ids'] if i['cqrs_id'] == 'golden_parent'
        ]
        return item['applied_count']

    wait_until(lambda: applied() == total, timeout=10, what=f'applied_count = {total}')
    assert status(replica, env)[1]['dead_letters']['messages'] == 0


def test_master_status_shows_the_outbox_not_a_queue(master):
    """On a master-only service: outbox backlog, no queue to probe, exit 0."""
    proc = master.manage('cqrs_status', '--max-outbox-age', '60')
    assert proc.returncode == 0, proc.stderr
    assert 'Outbox        0 waiting' in proc.stdout
    assert 'Queue' not in proc.stdout
