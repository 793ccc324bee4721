"""The one fork hook: per-process state registers a callback that resets it in a forked child
(:class:`ProcessConnection`: a publishing connection held that way, for pika and kombu)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from dj_cqrs.constants import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

_callbacks: list[Callable[[], Callable[[], None] | None]] = []
_lock = threading.Lock()
_pid = os.getpid()


def after_fork_in_child(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback()`` in the child of every later fork, before any other code of ours.

    A bound method is held weakly, anything else strongly; returns ``callback`` (a decorator).
    """
    _callbacks[:] = [reference for reference in _callbacks if reference() is not None]
    if hasattr(callback, '__self__') and hasattr(callback, '__func__'):
        _callbacks.append(weakref.WeakMethod(callback))
    else:
        _callbacks.append(lambda: callback)
    return callback


def check() -> None:
    """Run the callbacks now if this process is a child that ``os.fork`` did not announce.

    (uWSGI without ``py-call-osafterfork`` forks from C and skips Python's fork hooks.)
    """
    if os.getpid() != _pid:
        _run_in_child()


def _run_in_child() -> None:
    global _pid
    with _lock:  # only ever taken in a child: the parent cannot have held it at fork time
        if os.getpid() == _pid:
            return
        _pid = os.getpid()
        callbacks = list(_callbacks)
    for reference in callbacks:
        callback = reference()
        if callback is None:
            continue
        try:
            callback()
        except Exception:
            logger.exception('CQRS: resetting %r after a fork failed.', callback)


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_run_in_child)


class ProcessConnection:
    """One process's long-lived publishing connection (and channel), used under a lock; a
    forked child starts without one. Subclasses open it."""

    def __init__(self) -> None:
        self._forget_after_fork()
        after_fork_in_child(self._forget_after_fork)

    def _forget_after_fork(self) -> None:
        # Never close (nor wait on the locks of) what belongs to the parent process.
        self._lock = threading.RLock()
        self._connection: Any = None
        self._channel: Any = None

    def close(self) -> None:
        """Close this process's connection (if it has one)."""
        check()
        with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
            if connection is not None:
                self._release(connection)

    def _release(self, connection: Any) -> None:
        """Close quietly (pika's way; kombu's transport overrides it)."""
        with contextlib.suppress(Exception):
            if connection.is_open:
                connection.close()
