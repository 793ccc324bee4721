"""A forked child starts with fresh per-process state (dj_cqrs.forking, the one fork hook)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from dj_cqrs import forking
from dj_cqrs.observability import lag
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.publisher import Publisher

pytestmark = pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')


class _Socket:
    """Stands for a parent's open connection: the child must forget it, never close it."""

    is_open = True
    closed = False

    def close(self):
        self.closed = True

    def release(self):
        self.closed = True


def _in_child(probe) -> dict:
    """Run ``probe()`` in a forked child; returns what it reported (bounded wait)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, json.dumps(probe()).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail('the forked child did not finish in 20 s')
    with os.fdopen(read, 'rb') as pipe:
        return json.loads(pipe.read() or b'null')


def test_publisher_forgets_the_parents_connection():
    """A ``Publisher`` in the child has no connection and a lock nobody holds."""
    publisher = Publisher(lambda: [], lambda: 'cqrs')
    parent_socket = _Socket()
    publisher._connection = publisher._channel = parent_socket
    with publisher._lock:  # held by the parent while it forks
        report = _in_child(
            lambda: {
                'connection': publisher._connection is None,
                'lock_free': publisher._lock.acquire(timeout=1),
            }
        )
    assert report == {'connection': True, 'lock_free': True}
    assert publisher._connection is parent_socket and not parent_socket.closed


def test_kombu_producer_connection_is_fresh_in_the_child():
    """The Kombu transport's publishing connection is re-created, the parent's left alone."""
    parent = kombu_transport._producer
    parent_socket = parent._connection = _Socket()
    with parent._lock:
        report = _in_child(
            lambda: {
                'lock_free': kombu_transport._producer._lock.acquire(timeout=1),
                'connection': kombu_transport._producer._connection is None,
            }
        )
    assert report == {'lock_free': True, 'connection': True}
    assert parent._connection is parent_socket and not parent_socket.closed
    parent._connection = None


def test_lag_tracker_starts_empty_in_the_child():
    """Replica state recorded (not yet written) by the parent is not written twice."""
    lag.tracker._pending['fork_probe'] = lag.Applied('1', 1, None, None, None)
    try:
        report = _in_child(
            lambda: {'pending': list(lag.tracker._pending), 'thread': lag.tracker._thread}
        )
        assert report == {'pending': [], 'thread': None}
        assert 'fork_probe' in lag.tracker._pending
    finally:
        lag.tracker.discard()


def test_check_runs_the_callbacks_when_fork_was_not_announced(monkeypatch):
    """A child forked from C (no Python fork hook) is noticed by ``forking.check()``."""
    calls = []
    monkeypatch.setattr(forking, '_callbacks', [])
    forking.after_fork_in_child(lambda: calls.append(threading.get_ident()))
    forking.check()
    assert calls == []
    monkeypatch.setattr(forking, '_pid', -1)
    forking.check()
    forking.check()
    assert calls == [threading.get_ident()]
    assert forking._pid == os.getpid()


def test_a_bound_method_is_held_weakly():
    """Registering an object's method does not keep the object alive."""
    import gc
    import weakref

    publisher = Publisher(lambda: [], lambda: 'cqrs')
    ref = weakref.ref(publisher)
    del publisher
    gc.collect()
    assert ref() is None
