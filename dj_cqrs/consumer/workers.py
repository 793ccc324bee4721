"""Supervisor of the ``cqrs_consume`` worker processes."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from dj_cqrs.constants import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

_context = multiprocessing.get_context('spawn')


def consume(**kwargs: Any) -> None:
    """Body of a worker process: set Django up and consume until told to stop."""
    import django

    django.setup()

    from dj_cqrs.transport import get_transport

    transport = get_transport()

    def stop(signum: int, frame: FrameType | None) -> None:
        # A transport with ``request_stop`` finishes its current message and returns; any
        # other one is interrupted, as the original's workers were.
        request_stop = getattr(transport, 'request_stop', None)
        if request_stop is None:
            raise KeyboardInterrupt
        request_stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    from dj_cqrs.observability import lag

    # Replica state (cqrs_status: last applied, lag) is written at most once a second.
    lag.tracker.start_flusher()
    try:
        transport.consume(**kwargs)
    except KeyboardInterrupt:
        pass
    finally:
        lag.stop_flusher()


class _Slot:
    """One worker position: its current process and its restart pace."""

    def __init__(self) -> None:
        self.process: BaseProcess | None = None
        self.started_at = 0.0
        self.quick_deaths = 0
        self.not_before = 0.0


class WorkersManager:
    """Starts N worker processes and keeps them running.

    ``spawn`` context: a fresh interpreter each, safe with threads and open connections in the
    parent. Each one runs :func:`consume`: ``django.setup()``, then the configured transport's
    ``consume``. A worker that dies is logged and started again (with a growing pause if it
    keeps dying at once). SIGTERM or SIGINT stops all of them: SIGINT to each,
    ``sigint_timeout`` seconds to finish, then SIGKILL. With ``reload``, file changes under the
    current directory (and SIGHUP) restart the workers (needs watchfiles).
    """

    restart_pause_max = 30.0
    quick_death_seconds = 5.0
    poll_interval = 0.2

    def __init__(
        self,
        consume_kwargs: dict[str, Any] | None = None,
        workers: int = 1,
        reload: bool = False,
        ignore_paths: Iterable[Path] | None = None,
        sigint_timeout: float = 5,
        sigkill_timeout: float = 1,
        target: Callable[..., None] | None = None,
    ) -> None:
        self.consume_kwargs = dict(consume_kwargs or {})
        self.workers = max(1, int(workers))
        self.reload = reload
        self.ignore_paths = [Path(p) for p in ignore_paths or ()]
        self.sigint_timeout = sigint_timeout
        self.sigkill_timeout = sigkill_timeout
        self.target = target or consume
        self.slots = [_Slot() for _ in range(self.workers)]
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()

    # Public -----------------------------------------------------------------------------------

    def run(self) -> None:
        """Start the workers and supervise them until SIGTERM/SIGINT."""
        self._install_signals()
        watcher = self._start_watcher() if self.reload else None
        try:
            while not self.stop_event.is_set():
                if self.reload_event.is_set():
                    self.reload_event.clear()
                    self.stop_all()
                self._supervise()  # starts every worker without a process
                self.stop_event.wait(self.poll_interval)
        finally:
            self.stop_event.set()
            self.stop_all()
            if watcher is not None:
                watcher.join(timeout=2)

    def stop_all(self) -> None:
        """SIGINT every worker, wait ``sigint_timeout``, SIGKILL the rest."""
        alive = [s.process for s in self.slots if s.process is not None]
        for process in alive:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
        deadline = time.monotonic() + self.sigint_timeout
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in alive:
            if process.is_alive():
                logger.warning(
                    'Consumer process with pid %s did not stop in %s s: killed.',
                    process.pid,
                    self.sigint_timeout,
                )
                process.kill()
                process.join(self.sigkill_timeout)
        for process in alive:
            logger.info('Consumer process with pid %s stopped.', process.pid)
        for slot in self.slots:
            slot.process, slot.not_before = None, 0.0  # started again at once (reload)

    # Internals ----------------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        process = _context.Process(target=self.target, kwargs=self.consume_kwargs, daemon=False)
        process.start()
        slot.process, slot.started_at = process, time.monotonic()
        logger.info('Consumer process with pid %s started', process.pid)

    def _supervise(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and not process.is_alive():
                lived = now - slot.started_at
                slot.quick_deaths = slot.quick_deaths + 1 if lived < self.quick_death_seconds else 0
                pause = min(2.0 ** (slot.quick_deaths - 1), self.restart_pause_max)
                slot.not_before = now + (pause if slot.quick_deaths else 0.0)
                logger.error(
                    'Consumer process with pid %s died (exit code %s). Restarting...',
                    process.pid,
                    process.exitcode,
                )
                slot.process = None
            if slot.process is None and now >= slot.not_before and not self.stop_event.is_set():
                self._start(slot)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the owner sets ``stop_event`` itself

        def stop(signum: int, frame: FrameType | None) -> None:
            self.stop_event.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        if self.reload and hasattr(signal, 'SIGHUP'):
            signal.signal(signal.SIGHUP, lambda signum, frame: self.reload_event.set())

    def _start_watcher(self) -> threading.Thread:
        from watchfiles import PythonFilter, watch

        root = Path.cwd()
        watch_filter = PythonFilter(ignore_paths=self.ignore_paths)

        def run() -> None:
            for changes in watch(
                root,
                watch_filter=watch_filter,
                stop_event=self.stop_event,
                yield_on_timeout=True,
                rust_timeout=500,
            ):
                if not changes:
                    continue
                paths = sorted({_relative(path, root) for _, path in changes})
                logger.warning(
                    'Detected changes in %s. Reloading...', ', '.join(f'"{p}"' for p in paths)
                )
                self.reload_event.set()

        thread = threading.Thread(target=run, name='cqrs-reload', daemon=True)
        thread.start()
        return thread


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
