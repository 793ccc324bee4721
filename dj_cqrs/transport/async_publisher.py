"""Asynchronous publisher confirms for ``RabbitMQTransport`` (``CQRS_PUBLISH_CONFIRMS='async'``).

``produce`` puts the message in a bounded queue and returns; the thread encodes it (same body,
routing key and properties as the synchronous mode). One background thread per
process owns a lean AMQP connection (:mod:`dj_cqrs.transport.publish_connection`): it writes
whatever is queued in one go, keeps every unconfirmed message by delivery tag, and settles it
when the broker answers:

* ack: ``dj_cqrs.signals.message_published`` is sent (from the background thread);
* returned as unroutable: logged as in the synchronous mode (the broker dropped it);
* nack, connection lost, or no confirm within :data:`CONFIRM_TIMEOUT`: published again after
  reconnecting, up to ``CQRS_PUBLISH_RETRIES`` more times, then kept in the outbox
  (:func:`dj_cqrs.outbox.sending.keep`), so it is never silently lost.

If the queue is full the caller publishes synchronously instead. :func:`flush` waits for the
messages in flight; it runs at exit (bounded by :data:`EXIT_FLUSH`) and whatever is still
unconfirmed then is kept in the outbox. The thread is checked against the process id: a child
created by ``fork`` starts its own and never touches its parent's socket.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import time
from typing import Any

from pika import spec

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import PublishError
from dj_cqrs.transport import amqp_frames
from dj_cqrs.transport.amqp import connection_parameters, describe, mask_url
from dj_cqrs.transport.mixins import log_unroutable
from dj_cqrs.transport.publish_connection import ConnectionLost, PublishConnection
from dj_cqrs.transport.publisher import message_properties

logger = logging.getLogger(LOGGER_NAME)

QUEUE_SIZE = 10_000
"""Messages waiting for the thread; when full, ``produce`` publishes synchronously."""
CONFIRM_TIMEOUT = 10.0
"""Seconds a published message may wait for its confirm before the connection is reopened."""
EXIT_FLUSH = 5.0
"""Seconds the interpreter waits at exit for messages in flight."""
EXIT_KEEP = 60.0
"""Then, at most this many seconds for the thread to keep the unconfirmed ones in the outbox."""
_PROPERTIES = amqp_frames.properties_block(message_properties())
"""The encoded properties of every message ``produce`` sends (text/plain, persistent)."""
_TICK = 0.2
_CYCLE = 0.005
"""While messages keep coming, the thread publishes them in cycles of this many seconds."""


class _Item:
    """One message on its way: what to send, and what happened to it so far."""

    __slots__ = (
        'sender',
        'payload',
        'exchange',
        'routing_key',
        'body',
        'started',
        'attempts',
        'sent_at',
        'returned',
        'errors',
    )

    def __init__(self, sender: Any, payload: Any, exchange: str, routing_key: str) -> None:
        self.sender = sender
        self.payload = payload
        self.exchange = exchange
        self.routing_key = routing_key
        self.body: bytes | None = None  # encoded by the publishing thread
        self.started = time.monotonic()
        self.attempts = 0
        self.sent_at = 0.0
        self.returned = False
        self.errors: list[str] = []


class AsyncPublisher:
    """One background publishing thread of this process (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: collections.deque[_Item] = collections.deque()
        self._thread: threading.Thread | None = None
        self._loop: _Loop | None = None
        self._idle = threading.Condition()
        self._unsettled = 0

    # Caller side ------------------------------------------------------------------------------

    def submit(self, sender: Any, payload: Any, routing_key: str) -> bool:
        """Queue one message; False if the queue is full (publish it synchronously then)."""
        if len(self._queue) >= QUEUE_SIZE:
            return False
        item = _Item(sender, payload, get_settings().exchange, routing_key)
        loop, thread = self._loop, self._thread
        if self._pid != os.getpid() or loop is None or thread is None or not thread.is_alive():
            loop = self._ensure_started()
        with self._idle:
            self._unsettled += 1
        self._queue.append(item)  # deque.append is atomic: no lock on the hot path
        loop.wake()
        return True

    def flush(self, timeout: float = EXIT_FLUSH) -> bool:
        """Wait until every queued message is settled (acked, logged or kept); True if so."""
        if self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._unsettled > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, _TICK))
        return True

    def pending(self) -> int:
        """Messages queued or in flight in this process."""
        return self._unsettled if self._pid == os.getpid() else 0

    def shutdown(self, timeout: float = EXIT_FLUSH) -> None:
        """Flush, then stop the thread; what is still unconfirmed is kept in the outbox."""
        if self._pid != os.getpid() or self._loop is None:
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
            items = list(self._queue) + list(loop.retry) + list(loop.inflight.values())
            self._queue.clear()
            self._keep_many(items, 'the process exited before the message was confirmed')
        with self._lock:
            self._loop = self._thread = None

    # Thread side ------------------------------------------------------------------------------

    def _ensure_started(self) -> _Loop:
        pid = os.getpid()
        with self._lock:
            if self._pid != pid:
                # A forked child: its parent's queue and connection are not ours.
                self._queue = collections.deque()
                self._idle = threading.Condition()
                self._unsettled = 0
                self._loop = self._thread = None
                self._pid = pid
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                self._loop = _Loop(self)
                self._thread = threading.Thread(
                    target=self._loop.run, name='cqrs-async-publisher', daemon=True
                )
                self._thread.start()
            return self._loop

    def _settled(self, count: int = 1) -> None:
        with self._idle:
            self._unsettled -= count
            if self._unsettled <= 0:
                self._unsettled = 0
                self._idle.notify_all()

    def _acked(self, items: list[_Item]) -> None:
        """The broker confirmed ``items``: announce each, then settle them at once."""
        published = signals.message_published
        for item in items:
            if not item.returned:
                with _logged('message_published receiver'):
                    published.send(
                        item.sender, payload=item.payload, duration=time.monotonic() - item.started
                    )
        self._settled(len(items))

    def _keep(self, item: _Item, reason: str) -> None:
        self._keep_many([item], reason)

    def _keep_many(self, items: list[_Item], reason: str) -> None:
        """Keep ``items`` in the outbox (or report them lost with the outbox off); settle them.

        Called by the publishing thread, and by the exiting process when that thread is stuck.
        """
        if not items:
            return
        from dj_cqrs.outbox import sending

        off = get_settings().master.outbox_mode == sending.OUTBOX_OFF
        try:
            for item in items:
                # An exception, as in the synchronous mode: publish_failed receivers get one.
                error = PublishError(
                    f"CQRS couldn't be published: {reason}"
                    + (f' ({"; ".join(item.errors[-3:])})' if item.errors else ''),
                    item.payload,
                )
                try:
                    if off:
                        sending._report_lost(item.payload, error, item.sender)
                    else:
                        sending.keep(
                            item.payload, error, sender=item.sender, attempts=item.attempts
                        )
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


def _hold_new_messages() -> None:
    """Messages wait for a broker that is unreachable: until this thread reconnects (at most
    CQRS_OUTBOX_HOLD seconds after the last failure) new messages go straight to the outbox, in
    the thread that saves (as with synchronous confirms), instead of piling up here."""
    from dj_cqrs.outbox import sending

    if get_settings().master.outbox_mode != sending.OUTBOX_OFF:
        sending.hold.start()


def _release_hold() -> None:
    from dj_cqrs.outbox import sending

    sending.hold.clear()


@contextlib.contextmanager
def _logged(what: str) -> Any:
    try:
        yield
    except Exception:
        logger.exception('CQRS async publisher: %s failed.', what)


class _Loop:
    """The publishing thread: connect, publish, settle confirms, reconnect."""

    def __init__(self, owner: AsyncPublisher) -> None:
        self.owner = owner
        self.retry: collections.deque[_Item] = collections.deque()
        self.inflight: dict[int, _Item] = {}
        self.connection: PublishConnection | None = None
        self.opening: PublishConnection | None = None
        self.declared: set[str] = set()
        self.tags = itertools.count(1)
        self.stopping = False
        self.keep_on_stop = False
        self.failures = 0
        self.wake_pending = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # Called from other threads.

    def wake(self) -> None:
        # Waking the thread costs the caller a system call: after one wake-up the thread
        # works in cycles (_CYCLE) until the queue stays empty, and callers only queue.
        if not self.wake_pending:
            self.wake_pending = True
            self._poke()

    def stop(self, keep_unsettled: bool) -> None:
        self.keep_on_stop = keep_unsettled
        self.stopping = True
        self._poke()
        opening = self.opening
        if opening is not None and self.connection is None:
            # Still in the (blocking) handshake, e.g. with a broker that is starting: give up
            # on it so the thread gets to keep what it holds.
            opening.abort()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full (already woken) or closed (thread gone)
            self._wake_w.send(b'x')

    # The thread.

    def run(self) -> None:
        parameters_index = 0
        try:
            while not self.stopping:
                try:
                    parameters = connection_parameters(get_settings())
                except Exception:
                    logger.exception('CQRS async publisher: bad connection settings.')
                    self._pause(1.0)
                    continue
                params = parameters[parameters_index % len(parameters)]
                parameters_index += 1
                connection = self.opening = PublishConnection(params)
                try:
                    connection.open()
                except Exception as err:
                    self._on_open_error(err)
                else:
                    self.connection = connection
                    self._serve(connection)
                finally:
                    self.connection = self.opening = None
                if self.stopping:
                    break
                self._pause(min(0.2 * 2**self.failures, 2.0) if self.failures else 0.05)
            self._give_up_all()
        finally:
            for sock in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    sock.close()

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when poked (stop())."""
        try:
            readable, _, _ = select.select([self._wake_r], [], [], seconds)
        except (OSError, ValueError):
            return
        if readable:
            self._clear_wakeups()

    def _clear_wakeups(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _serve(self, connection: PublishConnection) -> None:
        """Publish and settle until the connection fails or the publisher stops.

        Idle, the thread sleeps in ``select`` on the socket and the wake-up socket. The first
        message wakes it (one system call in the caller) and is written at once; then, while
        messages keep coming, the thread works in cycles of :data:`_CYCLE` seconds, reading
        the confirms and writing everything queued in one go, and callers only append to the
        queue. A cycle that finds nothing to send returns it to idle. Every system call lets
        the application threads have the GIL and take it back, so fewer, larger cycles are
        what keeps the publisher cheap for the code that saves.
        """
        self.failures = 0
        self.declared.clear()
        self.tags = itertools.count(1)
        self.wake_pending = False
        _release_hold()  # the broker is reachable again: new messages come here, not the outbox
        busy = False
        next_tick = time.monotonic() + _TICK
        try:
            while True:
                if self.stopping and (self.keep_on_stop or self._idle()):
                    connection.close()
                    return
                now = time.monotonic()
                if busy:
                    # Only stop() writes to the wake-up socket now: sleep out the cycle.
                    self._pause(_CYCLE)
                    self._received(connection.read_nowait())
                    if not self.drain(connection):
                        # Nothing came during the cycle: idle again. The flag goes down before
                        # a last look, so a message queued meanwhile is either seen here or
                        # wakes us.
                        self.wake_pending = False
                        busy = self.drain(connection)
                else:
                    timeout = 0.0 if connection.pending() else max(next_tick - now, 0.0)
                    readable, _, _ = select.select([connection.sock, self._wake_r], [], [], timeout)
                    if connection.sock in readable or connection.pending():
                        self._received(connection.read_nowait())
                    if self._wake_r in readable:
                        self._clear_wakeups()
                        busy = self.drain(connection) or bool(self.owner._queue)
                        if not busy:
                            self.wake_pending = False
                            busy = self.drain(connection)
                    elif self.retry:
                        self.drain(connection)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + _TICK
                    self._tick(connection)
        except (OSError, ConnectionLost) as err:
            self._on_closed(err)
        except Exception as err:
            # A bug, not the broker: drop this connection and start over; nothing is lost.
            logger.exception('CQRS async publisher failed; reconnecting.')
            self._on_closed(err)
        finally:
            connection.abort()

    def _idle(self) -> bool:
        return not self.inflight and not self.retry and not self.owner._queue

    def _on_open_error(self, err: BaseException) -> None:
        self.failures += 1
        text = f'{type(err).__name__}: {mask_url(str(err))}'
        if not self.stopping:
            logger.warning(
                'CQRS async publisher cannot connect to %s: %s. Reconnect...',
                describe(get_settings()),
                text,
            )
        # Without a broker nothing gets out: count an attempt for everything waiting.
        self._requeue_inflight(text)
        self._take_queued()
        for item in list(self.retry):
            item.attempts += 1
            item.errors.append(text)
        if self.retry and not self.stopping:
            _hold_new_messages()  # messages are waiting for a broker that is not there
        self._give_up_exhausted()

    def _on_closed(self, reason: BaseException) -> None:
        if not self.stopping:
            self.failures += 1
            logger.warning(
                'CQRS async publisher connection closed: %s. Reconnect...',
                mask_url(str(reason)),
            )
        self._requeue_inflight(f'{type(reason).__name__}: {mask_url(str(reason))}')
        if (self.retry or self.owner._queue) and not self.stopping:
            _hold_new_messages()  # messages were lost in flight: the broker is failing
        self._give_up_exhausted()

    def _tick(self, connection: PublishConnection) -> None:
        connection.keep_alive()
        if self.inflight:
            oldest = next(iter(self.inflight.values()))
            if time.monotonic() - oldest.sent_at > CONFIRM_TIMEOUT:
                raise ConnectionLost(f'no confirm within {CONFIRM_TIMEOUT} s')

    def _take_queued(self) -> None:
        waiting = self.owner._queue
        while waiting:
            self.retry.append(waiting.popleft())

    def drain(self, connection: PublishConnection) -> bool:
        """Publish everything waiting (retries first) in one write; True if anything was sent.

        Confirms are not waited for here: they are read by :meth:`_serve`.
        """
        if connection.blocked:
            return False  # the broker is out of resources; the confirm timeout watches this
        waiting = self.owner._queue
        frames: list[bytes] = []
        sent_declare = False
        while not self.stopping or not self.keep_on_stop:
            if self.retry:
                item = self.retry.popleft()
            elif waiting:
                item = waiting.popleft()
            else:
                break
            if item.exchange not in self.declared:
                if frames:
                    connection.send(b''.join(frames))  # in order: before the declare
                    frames = []
                connection.declare_exchange(item.exchange)
                self.declared.add(item.exchange)
                sent_declare = True
            if item.body is None:
                # Encoded here rather than in produce(): the saving thread's time is the
                # application's, and this thread mostly runs while that one waits for its disk.
                try:
                    item.body = item.payload.encode()
                except Exception as err:
                    item.errors.append(f'{type(err).__name__}: {err}')
                    self.owner._keep(item, 'its body cannot be encoded')
                    continue
            try:
                frames.append(
                    connection.publish_frames(
                        item.exchange, item.routing_key, item.body, _PROPERTIES
                    )
                )
            except ValueError as err:
                # This message can never be published (e.g. a routing key over 255 bytes).
                item.errors.append(str(err))
                self.owner._keep(item, 'it cannot be sent over AMQP')
                continue
            item.sent_at = time.monotonic()
            item.returned = False
            self.inflight[next(self.tags)] = item
        if frames:
            # A failure here reaches _serve, which moves everything in flight back to the
            # retries: a message the broker did not confirm is sent again, never dropped.
            connection.send(b''.join(frames))
            return True
        return sent_declare

    def _received(self, received: list[Any]) -> None:
        for method in received:
            if isinstance(method, tuple):
                self._on_return(method[0], method[1])
            elif isinstance(method, (spec.Basic.Ack, spec.Basic.Nack)):
                self._on_confirm(method)

    def _on_return(self, method: Any, body: bytes) -> None:
        # A return comes before the confirm of its message and carries no delivery tag: it is
        # the oldest unconfirmed message with this routing key and body.
        for item in self.inflight.values():
            if not item.returned and item.routing_key == method.routing_key and item.body == body:
                item.returned = True
                log_unroutable(item.payload, item.routing_key)
                return

    def _on_confirm(self, method: Any) -> None:
        tag, inflight = method.delivery_tag, self.inflight
        if method.multiple:
            items = []
            while inflight:
                first = next(iter(inflight))
                if first > tag:
                    break
                items.append(inflight.pop(first))
        else:
            item = inflight.pop(tag, None)
            items = [] if item is None else [item]
        if isinstance(method, spec.Basic.Ack):
            if items:
                self.owner._acked(items)
            return
        for item in items:
            item.attempts += 1
            item.errors.append('nacked by the broker')
            self.retry.append(item)
        self._give_up_exhausted()

    def _requeue_inflight(self, reason: str) -> None:
        items = list(self.inflight.values())
        self.inflight.clear()
        for item in items:
            item.attempts += 1
            item.errors.append(reason)
        self.retry.extendleft(reversed(items))

    def _give_up_exhausted(self) -> None:
        limit = get_settings().master.publish_retries
        if not any(item.attempts > limit for item in self.retry):
            return
        keep = [item for item in self.retry if item.attempts > limit]
        self.retry = collections.deque(item for item in self.retry if item.attempts <= limit)
        by_attempts: dict[int, list[_Item]] = {}
        for item in keep:
            by_attempts.setdefault(item.attempts, []).append(item)
        for attempts, items in by_attempts.items():
            self.owner._keep_many(items, f'not confirmed after {attempts} attempts')

    def _give_up_all(self) -> None:
        """The thread ends: keep what was not confirmed (only when asked to, at exit)."""
        if not self.keep_on_stop:
            return
        self._requeue_inflight('the process exited before the broker confirmed')
        self._take_queued()
        items, self.retry = list(self.retry), collections.deque()
        self.owner._keep_many(items, 'the process exited before the confirm')


_publisher = AsyncPublisher()


def submit(sender: Any, payload: Any, routing_key: str) -> bool:
    """Queue ``payload`` for the background publisher; False: publish it synchronously."""
    return _publisher.submit(sender, payload, routing_key)


def flush(timeout: float = EXIT_FLUSH) -> bool:
    """Wait (at most ``timeout`` s) until this process has no message queued or in flight."""
    return _publisher.flush(timeout)


def pending() -> int:
    """Messages queued or awaiting a confirm in this process."""
    return _publisher.pending()


@atexit.register
def _flush_at_exit() -> None:
    with _logged('flush at exit'):
        _publisher.shutdown(EXIT_FLUSH)
