"""The cqrs_consume supervisor (real worker processes) and the command's arguments."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from dj_cqrs.consumer.workers import WorkersManager

# Worker bodies (module level: the spawn context imports them in the child).


def sleeper(**kwargs):
    time.sleep(60)


def quitter(**kwargs):
    os._exit(3)


def stubborn(ready, **kwargs):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    Path(ready).touch()
    time.sleep(60)


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError('timed out')


class Running:
    """A WorkersManager run in a thread (signals are the test's business here)."""

    def __init__(self, **kwargs):
        self.manager = WorkersManager(**kwargs)
        self.thread = threading.Thread(target=self.manager.run)

    def __enter__(self):
        self.thread.start()
        return self.manager

    def __exit__(self, *exc):
        self.manager.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def alive(manager):
    return [s.process for s in manager.slots if s.process is not None and s.process.is_alive()]


def test_dead_worker_is_restarted_with_a_log_line(cqrs_log):
    """A worker killed with SIGKILL is replaced by a new process, and it says so."""
    with Running(workers=2, target=sleeper) as manager:
        wait_for(lambda: len(alive(manager)) == 2)
        victim = manager.slots[0].process.pid
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: any(f'pid {victim} died (exit code -9)' in line for line in cqrs_log()))
        wait_for(lambda: len(alive(manager)) == 2)
        assert victim not in [p.pid for p in alive(manager)]
    lines = cqrs_log()
    assert f'ERROR Consumer process with pid {victim} died (exit code -9). Restarting...' in lines
    assert sum('started' in line for line in lines) == 3


def test_stop_ends_every_worker_with_stopped_lines(cqrs_log):
    """Stopping the supervisor stops all workers (SIGINT) and logs each one."""
    with Running(workers=2, target=sleeper) as manager:
        wait_for(lambda: len(alive(manager)) == 2)
        pids = [p.pid for p in alive(manager)]
    for pid in pids:
        assert f'INFO Consumer process with pid {pid} stopped.' in cqrs_log()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_worker_ignoring_sigint_is_killed_after_the_timeout(cqrs_log, tmp_path):
    """A worker that does not stop within sigint_timeout gets SIGKILL."""
    ready = tmp_path / 'ready'
    kwargs = {'consume_kwargs': {'ready': str(ready)}, 'sigint_timeout': 0.5}
    with Running(workers=1, target=stubborn, **kwargs) as manager:
        wait_for(ready.exists)
        pid = alive(manager)[0].pid
    assert any(f'pid {pid} did not stop in 0.5 s: killed.' in line for line in cqrs_log())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_worker_that_keeps_dying_is_restarted_with_growing_pauses(cqrs_log):
    """Crash loops do not spin: about 1 s, then 2 s, between restarts of a worker that dies
    at once."""

    def starts():
        return sum(line.endswith('started') for line in cqrs_log())

    with Running(workers=1, target=quitter):
        moments = []
        for count in (1, 2, 3):
            wait_for(lambda count=count: starts() >= count, timeout=30)
            moments.append(time.monotonic())
    assert moments[1] - moments[0] >= 0.9
    assert moments[2] - moments[1] >= 1.9
    assert any('died (exit code 3). Restarting...' in line for line in cqrs_log())


@pytest.fixture
def captured(monkeypatch):
    """The WorkersManager cqrs_consume builds, without running it."""
    seen = {}

    def run(self):
        seen['manager'] = self

    monkeypatch.setattr(WorkersManager, 'run', run)
    return seen


def test_consume_command_passes_its_flags(captured, tmp_path):
    """-w, --cqrs-id (deduplicated), --sigint-timeout, --sigkill-timeout, --ignore-paths."""
    call_command(
        'cqrs_consume',
        '-w',
        '3',
        '-cid',
        'golden_parent',
        'golden_parent',
        'golden_basic',
        '--sigint-timeout',
        '7',
        '--sigkill-timeout',
        '2',
        '--ignore-paths',
        f'{tmp_path},relative/dir',
    )
    manager = captured['manager']
    assert manager.workers == 3
    assert manager.consume_kwargs == {'cqrs_ids': {'golden_parent', 'golden_basic'}}
    assert (manager.sigint_timeout, manager.sigkill_timeout) == (7, 2)
    assert manager.ignore_paths == [tmp_path.resolve(), Path('relative/dir').resolve()]
    assert manager.reload is False


def test_consume_command_defaults(captured):
    """No flags: one worker, all ids, SIGINT timeout 5 s, SIGKILL timeout 1 s."""
    call_command('cqrs_consume')
    manager = captured['manager']
    assert (manager.workers, manager.consume_kwargs) == (1, {})
    assert (manager.sigint_timeout, manager.sigkill_timeout) == (5, 1)


def test_consume_command_refuses_unknown_cqrs_id(captured):
    """An id that is not a replica CQRS_ID is the original's CommandError."""
    with pytest.raises(CommandError, match='^Wrong CQRS ID: nope!$'):
        call_command('cqrs_consume', '--cqrs-id', 'nope')


def test_reload_without_watchfiles_is_a_clear_error(captured, monkeypatch):
    """--reload needs watchfiles; without it the command says how to install it."""
    monkeypatch.setitem(sys.modules, 'watchfiles', None)
    with pytest.raises(CommandError, match='watchfiles'):
        call_command('cqrs_consume', '--reload')


def test_reload_flag_reaches_the_supervisor(captured):
    """-r turns on reloading (watchfiles is installed in the test environment)."""
    pytest.importorskip('watchfiles')
    call_command('cqrs_consume', '-r')
    assert captured['manager'].reload is True


def test_reload_request_restarts_every_worker(cqrs_log):
    """A reload (file change or SIGHUP under --reload) stops all workers and starts new ones."""
    with Running(workers=2, target=sleeper) as manager:
        wait_for(lambda: len(alive(manager)) == 2)
        before = {p.pid for p in alive(manager)}
        manager.reload_event.set()
        wait_for(lambda: len(alive(manager)) == 2 and not before & {p.pid for p in alive(manager)})
    for pid in before:
        assert f'INFO Consumer process with pid {pid} stopped.' in cqrs_log()
