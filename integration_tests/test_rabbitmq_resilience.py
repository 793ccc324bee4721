"""Broker restarts and dying workers: the services recover by themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from integration_tests.harness import PYTHON, wait_until
from integration_tests.rabbit import broker_up, rabbitmqctl

PARENT = 'replicaapp_goldenparentreplica'


def test_worker_and_publisher_survive_a_broker_restart(master, replica, consumer, stack, tmp_path):
    """stop_app/start_app while a worker and a master process run: both reconnect by
    themselves and later changes still reach the replica."""
    c = consumer()
    flag = tmp_path / 'broker_is_back'
    # One long-lived master process: its publishing connection dies with the broker.
    script = (
        'import os, time\n'
        'from masterapp.models import GoldenParent as P\n'
        "P.objects.create(id=1, name='before')\n"
        "print('first', flush=True)\n"
        'deadline = time.monotonic() + 120\n'
        f'while not os.path.exists({str(flag)!r}) and time.monotonic() < deadline:\n'
        '    time.sleep(0.2)\n'
        "P.objects.create(id=2, name='after')\n"
        "print('second', flush=True)\n"
    )
    master_proc = subprocess.Popen(
        [PYTHON, 'manage.py', 'shell', '-v', '0', '-c', script],
        cwd=stack.master.directory,
        env=stack.master.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: replica.query(f'SELECT id FROM {PARENT}') == [(1,)], 30)
        try:
            rabbitmqctl('stop_app')
            time.sleep(2)
        finally:
            rabbitmqctl('start_app')
        wait_until(broker_up, 60, what='broker back')
        c.wait_log('AMQP connection error. Reconnecting...', timeout=30)
        stack.wait_consuming(c, 1, timeout=60)
        flag.touch()
        out, _ = master_proc.communicate(timeout=120)
    finally:
        if master_proc.poll() is None:
            master_proc.kill()
            master_proc.wait(10)
    assert master_proc.returncode == 0, out
    assert 'second' in out
    wait_until(
        lambda: (
            replica.query(f'SELECT id, name FROM {PARENT} ORDER BY id')
            == [
                (1, 'before'),
                (2, 'after'),
            ]
        ),
        60,
        what='the change made after the restart applied',
    )
    # A brand-new process publishes too, and the same worker applies it.
    master.shell("from masterapp.models import GoldenParent as P; P.objects.create(id=3, name='3')")
    wait_until(lambda: len(replica.query(f'SELECT id FROM {PARENT}')) == 3, 30)
    assert c.proc.poll() is None


def test_killed_worker_is_restarted(master, replica, consumer, stack):
    """Under -w 2, a worker killed with SIGKILL is replaced (log line) and work goes on."""
    c = consumer(workers=2)
    first = c.worker_pids()
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    c.wait_log(f'Consumer process with pid {first[0]} died (exit code -9). Restarting...')
    wait_until(lambda: len(c.worker_pids()) == 3, 30, what='a third worker started')
    stack.wait_consuming(c, 2)
    master.shell("from masterapp.models import GoldenParent as P; P.objects.create(id=1, name='x')")
    wait_until(lambda: replica.query(f'SELECT id FROM {PARENT}') == [(1,)], 30)


def test_sigterm_stops_every_worker(consumer):
    """SIGTERM to cqrs_consume stops all its workers and exits cleanly."""
    c = consumer(workers=2)
    pids = c.worker_pids()
    assert c.stop() == 0
    for pid in pids:
        assert f'Consumer process with pid {pid} stopped.' in c.log()
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f'worker {pid} still runs')


def test_sigint_stops_every_worker(consumer, wait_until):
    """SIGINT (Ctrl+C) to cqrs_consume stops all workers too."""
    c = consumer(workers=1)
    [pid] = c.worker_pids()
    c.proc.send_signal(signal.SIGINT)
    assert c.proc.wait(20) == 0
    assert f'Consumer process with pid {pid} stopped.' in c.log()


def test_heartbeats_survive_a_handler_longer_than_the_heartbeat(master, replica, stack, consumer):
    """heartbeat=2 s and a handler that takes 7 s: the connection stays up, the message is
    applied and acked once (no reconnect, no redelivery)."""
    c = consumer(env={'CQRS_IT_URL': f'{stack.spec.url}?heartbeat=2', 'CQRS_IT_SLOW': '7'})
    master.shell("from masterapp.models import Slow; Slow.objects.create(id=1, name='slow')")
    c.wait_log('CQRS is applied: pk = 1 (it_slow)', timeout=40)
    time.sleep(3)  # a lost connection would show up as a reconnect and a second delivery
    log = c.log()
    assert 'AMQP connection error' not in log
    assert log.count('CQRS is received: pk = 1 (it_slow)') == 1
    assert replica.query('SELECT id, name FROM replicaapp_slowreplica') == [(1, 'slow')]
