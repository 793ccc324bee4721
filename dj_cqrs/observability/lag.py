"""Replication lag: per ``cqrs_id``, what this replica applied last and how late it was.

Applied messages are aggregated in memory and upserted into ``ReplicaState`` at most once per
``CQRS['replica']['CQRS_STATE_FLUSH_INTERVAL']`` seconds: by a worker's flusher thread, else by
the applying thread; at once for the in-process transport or an interval of 0. Lag is the time
between the master's change (``cqrs_updated``) and the apply.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, close_old_connections, connections, router, transaction
from django.db.models import F, Q
from django.utils import timezone

from dj_cqrs import forking, signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.threadlocal import local_value
from dj_cqrs.values import master_time

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload

logger = logging.getLogger(LOGGER_NAME)


@dataclass
class Applied:
    """What is known about the last message applied for one ``cqrs_id`` (not yet written)."""

    pk: str
    revision: int | None
    master_updated: datetime | None
    applied_at: datetime
    lag: float | None
    count: int = 1

    def merge(self, newer: Applied) -> None:
        """Fold a later record into this one: its ``last_*`` values, both counts."""
        count = self.count + newer.count
        self.__dict__.update(newer.__dict__)
        self.count = count


def _applied(
    payload: TransportPayload, applied_at: datetime, lag: float | None, count: int = 1
) -> Applied:
    data = payload.instance_data or {}
    updated = master_time(data.get('cqrs_updated'))  # the master's change (None if absent/bad)
    if updated is not None:
        lag = (applied_at - updated).total_seconds()
    elif lag is not None:
        updated = applied_at - timedelta(seconds=lag)
    revision = data.get('cqrs_revision')
    return Applied(
        pk=str(payload.pk),
        revision=revision if isinstance(revision, int) else None,
        master_updated=updated,
        applied_at=applied_at,
        lag=lag,
        count=count,
    )


class LagTracker:
    """In-memory aggregation of applied messages, written to ``ReplicaState`` periodically
    (``background=False``: only by :meth:`flush`)."""

    def __init__(self, background: bool = True) -> None:
        self.background = background
        self._reset()

    def _reset(self) -> None:
        self._last_flush = float('-inf')
        self._lock = threading.Lock()
        self._pending: dict[str, Applied] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def record(
        self,
        payload: TransportPayload,
        *,
        lag: float | None = None,
        applied_at: datetime | None = None,
        immediate: bool = False,
    ) -> None:
        """Note one applied message; written now if ``immediate``, else when due."""
        entry = _applied(payload, applied_at or timezone.now(), lag)
        self._add({payload.cqrs_id: entry}, immediate)

    def record_batch(self, payloads: Iterable[TransportPayload], immediate: bool = False) -> None:
        """Note a batch of applied messages (in apply order) with one lock and one clock read.

        Every payload given is counted: an apply path that also sends ``message_applied`` per
        message sends it inside :func:`deferred`, so the signal records nothing.
        """
        # Only the last message of each cqrs_id gives the ``last_*`` values (Applied.merge):
        # count the others, build (and parse cqrs_updated of) that one alone.
        last: dict[str, Any] = {}
        counts: Counter[str] = Counter()
        for p in payloads:
            last.pop(p.cqrs_id, None)  # keep apply order of the last messages
            last[p.cqrs_id] = p
            counts[p.cqrs_id] += 1
        if not last:
            return
        moment = timezone.now()
        entries = {key: _applied(p, moment, None, counts[key]) for key, p in last.items()}
        self._add(entries, immediate)

    def _add(self, entries: dict[str, Applied], immediate: bool) -> None:
        with self._lock:
            for cqrs_id, entry in entries.items():
                current = self._pending.setdefault(cqrs_id, entry)
                if current is not entry:
                    current.merge(entry)
        interval = get_settings().replica.state_flush_interval
        due = (
            self.background
            and not self.flusher_running()
            and time.monotonic() - self._last_flush >= interval
        )
        if immediate or interval <= 0 or due:
            # Logged by flush(); recording must never fail the apply, and a failed write
            # keeps the entries for the next one.
            with suppress(Exception):
                self.flush()

    def pending(self) -> dict[str, Applied]:
        """A copy of what is recorded but not written yet."""
        with self._lock:
            return {key: Applied(**vars(value)) for key, value in self._pending.items()}

    def flush(self) -> int:
        """Write what is pending to ``ReplicaState`` now; returns how many cqrs_ids were written
        (on a database error, the rest is kept for the next flush)."""
        with self._lock:
            entries, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        written = 0
        try:
            for cqrs_id, entry in entries.items():
                _upsert(cqrs_id, entry)
                written += 1
        except Exception:
            logger.warning('CQRS replica state could not be saved; will retry.', exc_info=True)
            with self._lock:
                for cqrs_id, entry in list(entries.items())[written:]:
                    newer = self._pending.pop(cqrs_id, None)
                    if newer is not None:
                        entry.merge(newer)
                    self._pending[cqrs_id] = entry
            raise
        return written

    def discard(self) -> None:
        """Forget what is pending (tests)."""
        with self._lock:
            self._pending.clear()

    def flusher_running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start_flusher(self) -> None:
        """In a worker process: write pending state every flush interval from a daemon thread."""
        interval = get_settings().replica.state_flush_interval
        if interval <= 0:
            return
        with self._lock:
            if self.flusher_running():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, args=(interval,), name='dj-cqrs-lag-flusher', daemon=True
            )
            self._thread.start()

    def _run(self, interval: float) -> None:
        try:
            while not self._stop.wait(interval):
                self._flush_quietly()
            self._flush_quietly()
        finally:
            connections.close_all()

    def _flush_quietly(self) -> None:
        if not self._pending:
            return  # An idle worker does not touch the database.
        close_old_connections()
        try:
            self.flush()
        except Exception:
            # Already logged; a broken connection is replaced on the next round.
            connections.close_all()

    def stop(self) -> None:
        """Stop the background flusher after a last flush (at worker exit)."""
        thread = self._thread
        self._stop.set()
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(5.0)
        self._thread = None


_local = threading.local()


def _upsert(cqrs_id: str, entry: Applied) -> None:
    from dj_cqrs.models import ReplicaState

    using = router.db_for_write(ReplicaState)
    last = {
        # A pk may be longer than the column (a text pk of any length): cut, never fail.
        'last_pk': entry.pk[: ReplicaState._meta.get_field('last_pk').max_length],
        'last_revision': entry.revision,
        'last_master_updated': entry.master_updated,
        'last_applied_at': entry.applied_at,
        'last_lag': entry.lag,
    }
    rows = ReplicaState.objects.using(using).filter(cqrs_id=cqrs_id)
    with transaction.atomic(using=using):
        if not rows.update(applied_count=F('applied_count') + entry.count):
            try:
                with transaction.atomic(using=using):
                    ReplicaState.objects.using(using).create(
                        cqrs_id=cqrs_id, applied_count=entry.count, **last
                    )
                return
            except IntegrityError:
                # Another worker created it meanwhile.
                rows.update(applied_count=F('applied_count') + entry.count)
        # Several workers share a cqrs_id: never move "last applied" back in time.
        rows.filter(
            Q(last_applied_at__isnull=True) | Q(last_applied_at__lte=entry.applied_at)
        ).update(**last)


tracker = LagTracker()
"""The process-wide tracker."""


def record_batch(payloads: Iterable[TransportPayload], sender: Any = None) -> None:
    """Note a batch of applied messages; for apply paths that do not send ``message_applied``
    (or send it inside :func:`deferred`). ``sender``: the transport, as for the signal."""
    tracker.record_batch(payloads, immediate=_immediate(sender))


@contextmanager
def deferred() -> Iterator[None]:
    """In this thread, ``message_applied`` does not record: the caller records the messages
    with one :func:`record_batch` (the batched apply: one clock read, one parse per cqrs_id)."""
    with local_value(_local, 'deferred', True):
        yield


def flush() -> int:
    """Write pending replica state now (a worker calls this when it stops)."""
    return tracker.flush()


def stop_flusher() -> None:
    """At worker (or process) exit: stop the flusher thread, then write what is pending."""
    tracker.stop()
    try:
        tracker.flush()
    except Exception:
        logger.debug('CQRS replica state not saved at exit.', exc_info=True)


def _immediate(sender: object) -> bool:
    # The in-process transport applies inside the caller's code (tests): write at once, in the
    # caller's transaction, so nothing outlives the test.
    return isinstance(sender, type) and bool(getattr(sender, 'applies_in_process', False))


def _on_applied(
    sender: Any, payload: TransportPayload, lag: float | None = None, **kwargs: Any
) -> None:
    if getattr(_local, 'deferred', False):
        return  # recorded with the whole batch by record_batch
    tracker.record(payload, lag=lag, immediate=_immediate(sender))


def connect() -> None:
    """Record every applied message (called by ``CQRSConfig.ready()``)."""
    signals.message_applied.connect(_on_applied, dispatch_uid='dj_cqrs.observability.lag')


atexit.register(stop_flusher)
forking.after_fork_in_child(tracker._reset)
