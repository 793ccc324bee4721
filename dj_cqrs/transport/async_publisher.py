"""Asynchronous publisher confirms for ``RabbitMQTransport`` (``CQRS_PUBLISH_CONFIRMS='async'``).

``produce`` encodes the message in the caller's thread (same body, routing key and properties as
the synchronous mode), puts it in a bounded queue and returns. One background thread per
process owns a pika ``SelectConnection``: it publishes whatever is queued, keeps every
unconfirmed message by delivery tag, and settles it when the broker answers:

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
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pika

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport.amqp import connection_parameters, describe, mask_url
from dj_cqrs.transport.publisher import message_properties

logger = logging.getLogger(LOGGER_NAME)

QUEUE_SIZE = 10_000
"""Messages waiting for the thread; when full, ``produce`` publishes synchronously."""
CONFIRM_TIMEOUT = 10.0
"""Seconds a published message may wait for its confirm before the connection is reopened."""
EXIT_FLUSH = 5.0
"""Seconds the interpreter waits at exit for messages in flight."""
_TICK = 0.2
_COALESCE = 0.005
"""After a wake-up, callers don't wake the thread again for this long (it drains by timer)."""


@dataclass
class _Item:
    sender: Any
    payload: Any
    exchange: str
    routing_key: str
    body: bytes
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0
    sent_at: float = 0.0
    returned: bool = False
    errors: list[str] = field(default_factory=list)


class AsyncPublisher:
    """One background publishing thread of this process (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.Queue[_Item] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._loop: _Loop | None = None
        self._idle = threading.Condition()
        self._unsettled = 0

    # Caller side ------------------------------------------------------------------------------

    def submit(self, sender: Any, payload: Any, routing_key: str) -> bool:
        """Queue one message; False if the queue is full (publish it synchronously then)."""
        item = _Item(sender, payload, get_settings().exchange, routing_key, payload.encode())
        loop = self._ensure_started()
        with self._idle:
            self._unsettled += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._settled()
            return False
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
            thread.join(2.0)
        if thread is not None and thread.is_alive():
            # The thread is stuck: keep what never left this process.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                self._keep(item, 'the process exited before the message was published')
        with self._lock:
            self._loop = self._thread = None

    # Thread side ------------------------------------------------------------------------------

    def _ensure_started(self) -> _Loop:
        pid = os.getpid()
        with self._lock:
            if self._pid != pid:
                # A forked child: its parent's queue and connection are not ours.
                self._queue = queue.Queue(QUEUE_SIZE)
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

    def _acked(self, item: _Item) -> None:
        if not item.returned:
            with _logged('message_published receiver'):
                signals.message_published.send(
                    item.sender, payload=item.payload, duration=time.monotonic() - item.started
                )
        self._settled()

    def _keep(self, item: _Item, reason: str) -> None:
        from dj_cqrs.outbox import sending

        error = f"CQRS couldn't be published: {reason}" + (
            f' ({"; ".join(item.errors[-3:])})' if item.errors else ''
        )
        try:
            if get_settings().master.outbox_mode == sending.OUTBOX_OFF:
                sending._report_lost(item.payload, error, item.sender)
            else:
                sending.keep(item.payload, error, sender=item.sender, attempts=item.attempts)
        except Exception:
            logger.exception(
                'CQRS message could not be kept: pk = %s (%s), routing_key = %s, body = %r.',
                item.payload.pk,
                item.payload.cqrs_id,
                item.routing_key,
                item.body,
            )
        finally:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            self._settled()


@contextlib.contextmanager
def _logged(what: str) -> Any:
    try:
        yield
    except Exception:
        logger.exception('CQRS async publisher: %s failed.', what)


class _Loop:
    """The ioloop thread: connect, publish, settle confirms, reconnect."""

    def __init__(self, owner: AsyncPublisher) -> None:
        self.owner = owner
        self.retry: collections.deque[_Item] = collections.deque()
        self.inflight: dict[int, _Item] = {}
        self.connection: Any = None
        self.channel: Any = None
        self.declared: set[str] = set()
        self.tags = itertools.count(1)
        self.stopping = False
        self.keep_on_stop = False
        self.failures = 0
        self.wake_pending = False

    # Called from other threads.

    def wake(self) -> None:
        # Writing to the ioloop's wake-up pipe for every message costs the caller more than the
        # rest of submit(): after one wake-up, the thread drains again by itself a few
        # milliseconds later (_rearm) and callers in between only queue.
        connection = self.connection
        if connection is not None and not self.wake_pending:
            self.wake_pending = True
            try:
                connection.ioloop.add_callback_threadsafe(self._woken)
            except Exception:
                self.wake_pending = False

    def stop(self, keep_unsettled: bool) -> None:
        self.keep_on_stop = keep_unsettled
        self.stopping = True
        connection = self.connection
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.ioloop.add_callback_threadsafe(self._close)

    # The thread.

    def run(self) -> None:
        parameters_index = 0
        while not self.stopping:
            try:
                parameters = connection_parameters(get_settings())
            except Exception:
                logger.exception('CQRS async publisher: bad connection settings.')
                time.sleep(1.0)
                continue
            params = parameters[parameters_index % len(parameters)]
            parameters_index += 1
            try:
                self.connection = pika.SelectConnection(
                    params,
                    on_open_callback=self._on_open,
                    on_open_error_callback=self._on_open_error,
                    on_close_callback=self._on_closed,
                )
                self.connection.ioloop.start()
            except Exception as err:
                self._on_open_error(None, err)
            self.connection = self.channel = None
            if self.stopping:
                break
            time.sleep(min(0.2 * 2**self.failures, 2.0) if self.failures else 0.05)
        self._give_up_all()

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, connection: Any, err: BaseException | str) -> None:
        self.failures += 1
        text = f'{type(err).__name__}: {mask_url(str(err))}'
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
        self._give_up_exhausted()
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        self.declared.clear()
        self.tags = itertools.count(1)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirming)

    def _woken(self) -> None:
        self.drain()
        connection = self.connection
        if connection is None:
            self.wake_pending = False
        else:
            connection.ioloop.call_later(_COALESCE, self._rearm)

    def _rearm(self) -> None:
        # Cleared before draining: a message queued after this drain finds the flag down.
        self.wake_pending = False
        self.drain()

    def _on_confirming(self, _frame: Any) -> None:
        self.failures = 0
        self.wake_pending = False
        self.connection.ioloop.call_later(_TICK, self._tick)
        self.drain()

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        self.channel = None
        connection = self.connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            logger.warning('CQRS async publisher channel closed: %s.', mask_url(str(reason)))
            self._close()

    def _on_closed(self, connection: Any, reason: BaseException) -> None:
        self.channel = None
        if not self.stopping:
            self.failures += 1
            logger.warning(
                'CQRS async publisher connection closed: %s. Reconnect...',
                mask_url(str(reason)),
            )
        self._requeue_inflight(f'{type(reason).__name__}: {mask_url(str(reason))}')
        self._give_up_exhausted()
        with contextlib.suppress(Exception):
            connection.ioloop.stop()

    def _close(self) -> None:
        connection = self.connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            with contextlib.suppress(Exception):
                connection.close()

    def _tick(self) -> None:
        if self.connection is None or self.channel is None:
            return
        if self.inflight:
            oldest = next(iter(self.inflight.values()))
            if time.monotonic() - oldest.sent_at > CONFIRM_TIMEOUT:
                logger.warning(
                    'CQRS async publisher: no confirm within %s s; reconnecting.',
                    CONFIRM_TIMEOUT,
                )
                self._close()
                return
        self.drain()
        self.connection.ioloop.call_later(_TICK, self._tick)

    def _take_queued(self) -> None:
        while True:
            try:
                self.retry.append(self.owner._queue.get_nowait())
            except queue.Empty:
                return

    def drain(self) -> None:
        """Publish everything waiting (retries first), without waiting for confirms."""
        channel = self.channel
        if channel is None or not channel.is_open:
            return
        while not self.stopping or not self.keep_on_stop:
            if self.retry:
                item = self.retry.popleft()
            else:
                try:
                    item = self.owner._queue.get_nowait()
                except queue.Empty:
                    return
            try:
                if item.exchange not in self.declared:
                    channel.exchange_declare(item.exchange, exchange_type='topic', durable=True)
                    self.declared.add(item.exchange)
                channel.basic_publish(
                    item.exchange,
                    item.routing_key,
                    item.body,
                    message_properties(),
                    mandatory=True,
                )
            except Exception as err:
                item.errors.append(f'{type(err).__name__}: {mask_url(str(err))}')
                self.retry.appendleft(item)
                self._close()
                return
            item.sent_at = time.monotonic()
            item.returned = False
            self.inflight[next(self.tags)] = item

    def _on_return(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        # A return comes before the confirm of its message and carries no delivery tag: it is
        # the oldest unconfirmed message with this routing key and body.
        for item in self.inflight.values():
            if not item.returned and item.routing_key == method.routing_key and item.body == body:
                item.returned = True
                logger.warning(
                    'CQRS is unroutable: pk = %s (%s), routing_key = %s. '
                    'No queue is bound to it; the broker dropped the message.',
                    item.payload.pk,
                    item.payload.cqrs_id,
                    item.routing_key,
                )
                return

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag, multiple = method.delivery_tag, method.multiple
        if multiple:
            tags = [t for t in self.inflight if t <= tag]
        else:
            tags = [tag] if tag in self.inflight else []
        ack = isinstance(method, pika.spec.Basic.Ack)
        for t in tags:
            item = self.inflight.pop(t)
            if ack:
                self.owner._acked(item)
            else:
                item.attempts += 1
                item.errors.append('nacked by the broker')
                self.retry.append(item)
        if not ack:
            self._give_up_exhausted()
            self.drain()

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
        for item in keep:
            self.owner._keep(item, f'not confirmed after {item.attempts} attempts')

    def _give_up_all(self) -> None:
        """The thread ends: keep what was not confirmed (only when asked to, at exit)."""
        if not self.keep_on_stop:
            return
        self._requeue_inflight('the process exited before the broker confirmed')
        self._take_queued()
        while self.retry:
            self.owner._keep(self.retry.popleft(), 'the process exited before the confirm')


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
