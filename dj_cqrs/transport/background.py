"""The publishing thread shared by the background publishers (RabbitMQ's and Kombu's): its
queue, what is unsettled, the failure sink (the outbox) and the flush at exit."""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dj_cqrs import forking, signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import PublishError

logger = logging.getLogger(LOGGER_NAME)

QUEUE_SIZE = 10_000
"""Messages waiting for the thread; when full, ``produce`` publishes synchronously."""
EXIT_FLUSH = 5.0
"""Seconds the interpreter waits at exit for messages in flight."""
EXIT_KEEP = 60.0
"""Then, at most this many seconds for the thread to keep the unconfirmed ones in the outbox."""
TICK = 0.2
"""Seconds between the checks of a waiting flush."""


class FailureSink(Protocol):
    """Where a message the publishing thread cannot publish goes (the outbox wires itself in)."""

    def keep(self, payload: Any, error: PublishError, sender: Any, attempts: int) -> None:
        """Keep (or report lost) one message that will not be published from here."""

    def hold(self) -> None:
        """The broker is failing: new messages should not wait for this thread."""

    def release(self) -> None:
        """The broker takes messages again."""


_sink: FailureSink | None = None


def set_failure_sink(sink: FailureSink | None) -> None:
    """Install where unpublishable messages go (called by the outbox when it is imported)."""
    global _sink
    _sink = sink


_handoff = threading.local()
_publishers: list[BackgroundPublisher] = []
"""Every background publisher of this process (RabbitMQ's, Kombu's)."""


def handed_off() -> bool:
    """Whether this thread's last ``submit`` handed its message to a publishing thread (then
    ``produce`` returning says nothing about the broker); reset by each call."""
    value = getattr(_handoff, 'value', False)
    _handoff.value = False
    return value


@dataclass(slots=True, eq=False)
class Item:
    """One message on its way: what to send, and what happened to it so far."""

    sender: Any
    payload: Any
    exchange: str
    routing_key: str
    body: bytes | None = None  # encoded by the publishing thread
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0
    sent_at: float = 0.0
    returned: bool = False
    errors: list[str] = field(default_factory=list)


def flush(timeout: float = EXIT_FLUSH) -> bool:
    """Wait (at most ``timeout`` s in all) until no background publisher of this process has a
    message queued or in flight, whichever transport queued it; True if so."""
    deadline = time.monotonic() + timeout
    return all(p.flush(max(0.0, deadline - time.monotonic())) for p in list(_publishers))


def pending() -> int:
    """Messages queued or in flight in this process, over every background publisher."""
    return sum(p.pending() for p in list(_publishers))


@atexit.register
def _shutdown_at_exit() -> None:
    """At exit each publisher flushes (:data:`EXIT_FLUSH`) and keeps what is unconfirmed."""
    for publisher in list(_publishers):
        with logged(f'flush at exit ({publisher._name})'):
            publisher.shutdown(EXIT_FLUSH)


class BackgroundPublisher:
    """One background publishing thread of this process: ``make_loop(owner)`` builds its
    :class:`Loop`, ``check()`` runs in the caller before the thread starts."""

    def __init__(
        self, make_loop: Callable[[BackgroundPublisher], Any], check: Callable[[], Any], name: str
    ) -> None:
        self._make_loop = make_loop
        self._check = check
        self._name = name
        self._forget_parent()
        _publishers.append(self)
        forking.after_fork_in_child(self._forget_parent)

    def _forget_parent(self) -> None:
        """In a forked child: the parent's queue, thread and connection are not ours."""
        self._lock = threading.Lock()
        self._queue: collections.deque[Item] = collections.deque()
        self._idle = threading.Condition()
        self._unsettled = 0
        self._loop: Any | None = None
        self._thread: threading.Thread | None = None

    # Caller side ------------------------------------------------------------------------------

    def submit(self, sender: Any, payload: Any, routing_key: str) -> bool:
        """Queue one message; False if the queue is full (publish it synchronously then)."""
        if len(self._queue) >= QUEUE_SIZE:
            return False
        item = Item(sender, payload, get_settings().exchange, routing_key)
        loop, thread = self._loop, self._thread
        forking.check()  # a child forked from C, which skipped Python's fork hooks
        if loop is None or thread is None or not thread.is_alive():
            loop = self._ensure_started()
        with self._idle:
            self._unsettled += 1
        self._queue.append(item)  # deque.append is atomic: no lock on the hot path
        loop.wake()
        _handoff.value = True
        return True

    def flush(self, timeout: float = EXIT_FLUSH) -> bool:
        """Wait until every queued message is settled (acked, logged or kept); True if so."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._unsettled > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, TICK))
        return True

    def pending(self) -> int:
        """Messages queued or in flight in this process."""
        return self._unsettled

    def shutdown(self, timeout: float = EXIT_FLUSH) -> None:
        """Flush, then stop the thread; what is still unconfirmed is kept in the outbox."""
        if self._loop is None:
            return
        flushed = self.flush(timeout)
        loop, thread = self._loop, self._thread
        loop.stop(keep_unsettled=not flushed)
        if thread is not None:
            # The thread keeps what is unconfirmed (one outbox row each): give it the time it
            # needs as long as it makes progress, up to EXIT_KEEP.
            deadline = time.monotonic() + EXIT_KEEP
            while thread.is_alive():
                before = self._unsettled
                thread.join(1.0)
                if not thread.is_alive():
                    break
                if self._unsettled == before or time.monotonic() > deadline:
                    break
        if thread is not None and thread.is_alive():
            # The thread is stuck: keep here whatever it still holds. If it wakes up and sends
            # one of them too, the replicas get it twice (same revision, applied once).
            items = [*self._queue, *loop.retry, *loop.delayed, *loop.inflight.values()]
            self._queue.clear()
            self._keep_many(items, 'the process exited before the message was confirmed')
        with self._lock:
            self._loop = self._thread = None

    # Thread side ------------------------------------------------------------------------------

    def _ensure_started(self) -> Any:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                self._check()
                self._loop = self._make_loop(self)
                self._thread = threading.Thread(target=self._loop.run, name=self._name, daemon=True)
                self._thread.start()
            return self._loop

    def _settled(self, count: int = 1) -> None:
        with self._idle:
            self._unsettled -= count
            if self._unsettled <= 0:
                self._unsettled = 0
                self._idle.notify_all()

    def _acked(self, items: list[Item]) -> None:
        """The broker confirmed ``items``: announce each, then settle them at once."""
        published = signals.message_published
        for item in items:
            if not item.returned:
                with logged('message_published receiver'):
                    published.send(
                        item.sender, payload=item.payload, duration=time.monotonic() - item.started
                    )
        self._settled(len(items))

    def _keep_many(self, items: list[Item], reason: str) -> None:
        """Hand ``items`` to the failure sink (the outbox keeps them, or reports them lost when
        it is off); settle them."""
        if not items:
            return
        sink = _sink
        try:
            for item in items:
                # An exception, as in the synchronous mode: publish_failed receivers get one.
                error = PublishError(
                    f"CQRS couldn't be published: {reason}"
                    + (f' ({"; ".join(item.errors[-3:])})' if item.errors else ''),
                    item.payload,
                )
                try:
                    if sink is None:
                        raise RuntimeError('no outbox is wired to keep it')
                    sink.keep(item.payload, error, item.sender, item.attempts)
                except Exception:
                    logger.exception(
                        'CQRS message could not be kept: pk = %s (%s), routing_key = %s, '
                        'body = %r.',
                        item.payload.pk,
                        item.payload.cqrs_id,
                        item.routing_key,
                        item.body,
                    )
                finally:
                    self._settled()
        finally:
            if threading.current_thread() is not threading.main_thread():
                # The publishing thread's own database connections: not left open.
                with contextlib.suppress(Exception):
                    from django.db import connections

                    connections.close_all()


class Loop:
    """The broker side of a background publisher, run in its thread: the messages it holds."""

    def __init__(self, owner: BackgroundPublisher) -> None:
        self.owner = owner
        self.retry: collections.deque[Item] = collections.deque()
        self.delayed: list[Item] = []  # nacked, waiting for their back-off
        self.inflight: dict[int, Item] = {}
        self.failures = 0  # connections that failed in a row
        self.stopping = False
        self.keep_on_stop = False

    def _take_queued(self) -> None:
        waiting = self.owner._queue
        while waiting:
            self.retry.append(waiting.popleft())

    def _encoded(self, item: Item) -> bool:
        """Encode the body, or keep the message if it cannot be (then False). Encoded here
        rather than in produce(): the saving thread's time is the application's, and this
        thread mostly runs while that one waits for its disk."""
        if item.body is None:
            try:
                item.body = item.payload.encode()
            except Exception as err:
                item.errors.append(f'{type(err).__name__}: {err}')
                self.owner._keep_many([item], 'its body cannot be encoded')
                return False
        return True

    def _requeue_inflight(self, reason: str) -> None:
        items = [self.inflight[tag] for tag in sorted(self.inflight)]
        self.inflight.clear()
        attempted(items, reason)
        self.retry.extendleft(reversed(items))

    def _give_up(self, items: Iterable[Item]) -> list[Item]:
        """Keep the items tried more than ``CQRS_PUBLISH_RETRIES`` times; returns the others."""
        limit = get_settings().master.publish_retries
        by_attempts: dict[int, list[Item]] = {}
        left = []
        for item in items:
            if item.attempts > limit:
                by_attempts.setdefault(item.attempts, []).append(item)
            else:
                left.append(item)
        for attempts, group in by_attempts.items():
            self.owner._keep_many(group, f'not confirmed after {attempts} attempts')
        return left

    def _give_up_exhausted(self) -> None:
        self.retry = collections.deque(self._give_up(self.retry))

    def _broker_failed(self, reason: str) -> None:
        """Without a broker nothing gets out: an attempt for everything waiting, and new
        messages go straight to the outbox while some wait."""
        self._requeue_inflight(reason)
        self._take_queued()
        attempted(self.retry, reason)
        if self.retry and not self.stopping:
            hold_new_messages()
        self._give_up_exhausted()

    def _give_up_all(self) -> None:
        """The thread ends: keep what was not confirmed (only when asked to, at exit)."""
        if not self.keep_on_stop:
            return
        self._requeue_inflight('the process exited before the broker confirmed')
        self._take_queued()
        items, self.retry = list(self.retry) + self.delayed, collections.deque()
        self.delayed = []
        self.owner._keep_many(items, 'the process exited before the confirm')


def attempted(items: Iterable[Item], reason: str) -> None:
    """Count a failed attempt for each of ``items``."""
    for item in items:
        item.attempts += 1
        item.errors.append(reason)


def hold_new_messages() -> None:
    """The broker is unreachable: new messages go straight to the outbox (``CQRS_OUTBOX_HOLD``)."""
    if _sink is not None:
        _sink.hold()


def release_hold() -> None:
    if _sink is not None:
        _sink.release()


@contextlib.contextmanager
def logged(what: str) -> Any:
    try:
        yield
    except Exception:
        logger.exception('CQRS async publisher: %s failed.', what)
