"""Asynchronous publisher confirms for ``RabbitMQTransport`` (``CQRS_PUBLISH_CONFIRMS='async'``).

``produce`` puts the message in a bounded queue and returns; the thread encodes it (same body,
routing key and properties as the synchronous mode). One background thread per process runs
pika's ``SelectConnection`` (its I/O loop, handshake, heartbeats, flow control and frame
codec: no AMQP code of ours) with one channel in confirm mode. It publishes whatever is
queued in one go, keeps every unconfirmed message by delivery tag, and settles it when the
broker answers:

* ack: ``dj_cqrs.signals.message_published`` is sent (from the background thread);
* returned as unroutable: logged as in the synchronous mode (the broker dropped it);
* nack (a queue over ``x-max-length`` with ``reject-publish``): published again after a
  back-off (:func:`dj_cqrs.transport.retry.backoff`);
* connection lost, channel closed by the broker (e.g. a deleted exchange), or no confirm within
  ``pika_link.CONFIRM_TIMEOUT``: published again after reconnecting;
* refused for good (403 no permission, 406 exchange of another type or message over the
  broker's ``max_message_size``): kept in the outbox at once (one ERROR line each, no
  retries); for an oversized message only that message.

A message that is not confirmed after ``CQRS_PUBLISH_RETRIES`` more attempts is kept in the
outbox (:func:`dj_cqrs.outbox.sending.keep`), so it is never silently lost. While the broker
blocks publishers (``Connection.Blocked``: memory or disk alarm) or cannot be reached, new
messages go to the outbox in the saving thread (``CQRS_OUTBOX_HOLD``); what was queued is
published as soon as the broker unblocks, and a block longer than the URL's
``blocked_connection_timeout`` (default 10 s) drops the connection.

If the queue is full the caller publishes synchronously instead. :func:`flush` waits for the
messages in flight; it runs at exit (bounded by :data:`EXIT_FLUSH`) and whatever is still
unconfirmed then is kept in the outbox. A child created by ``fork`` starts its own thread and
never touches its parent's socket (:mod:`dj_cqrs.forking`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import struct
import time
from typing import Any

from pika import spec
from pika.adapters.select_connection import IOLoop
from pika.exceptions import ShortStringTooLong

from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport import background
from dj_cqrs.transport.amqp import connection_parameters
from dj_cqrs.transport.background import BackgroundPublisher
from dj_cqrs.transport.background import Item as _Item
from dj_cqrs.transport.background import logged as _logged
from dj_cqrs.transport.mixins import log_unroutable
from dj_cqrs.transport.pika_link import PikaLink
from dj_cqrs.transport.publisher import message_properties
from dj_cqrs.transport.retry import backoff

logger = logging.getLogger(LOGGER_NAME)

_PROPERTIES = message_properties()
"""The properties of every message ``produce`` sends (text/plain, persistent)."""
_CYCLE = 0.001
"""While messages keep coming, the thread publishes them in cycles of this many seconds (the
first message of a burst goes out at once)."""


def _check_short(value: str, what: str) -> None:
    size = len(value.encode('utf-8'))
    if size > 255:
        raise ValueError(f'{what} is {size} bytes long; AMQP allows at most 255: {value!r}')


class _Loop(PikaLink):
    """The publishing thread: pika's ``SelectConnection`` and its I/O loop.

    Everything below runs in the thread, inside pika's I/O loop, except :meth:`wake` and
    :meth:`stop`, which other threads call: they hand work to the loop through
    ``add_callback_threadsafe``.
    """

    def __init__(self, owner: BackgroundPublisher) -> None:
        self.owner = owner
        self.ioloop = IOLoop()
        self.retry: collections.deque[_Item] = collections.deque()
        self.delayed: list[_Item] = []  # nacked, waiting for their back-off
        self.inflight: dict[int, _Item] = {}
        self.returned: collections.deque[tuple[str, bytes]] = collections.deque()
        self.connection: Any = None  # an open pika.SelectConnection
        self.channel: Any = None  # its channel, in confirm mode
        self.workflow: Any = None  # pika's connection workflow, while connecting
        self.declared: set[str] = set()
        self.declaring: str | None = None
        self.tag = 0
        self.blocked = False
        self.stopping = False
        self.keep_on_stop = False
        self.finished = False
        self.failures = 0  # connections that failed in a row
        self.channel_failures = 0  # channels the broker closed in a row
        self.wake_pending = False
        self._cycle: Any = None
        self._ticking: Any = None

    # Called from other threads.

    def wake(self) -> None:
        # Waking the thread costs the caller a system call: the first message of a burst
        # wakes it and is sent at once; while the thread works (see _cycle_done) callers only
        # append to the queue.
        if not self.wake_pending:
            self.wake_pending = True
            self._call_soon(self._on_wake)

    def stop(self, keep_unsettled: bool) -> None:
        self.keep_on_stop = keep_unsettled
        self.stopping = True
        self._call_soon(self._on_stop)

    def _call_soon(self, callback: Any) -> None:
        with contextlib.suppress(Exception):  # the loop is closed: the thread is gone
            self.ioloop.add_callback_threadsafe(callback)

    # The thread.

    def run(self) -> None:
        try:
            self.ioloop.add_callback_threadsafe(self._connect)
            self.ioloop.start()
        except Exception:
            logger.exception('CQRS async publisher: the I/O loop failed.')
        finally:
            with _logged('keeping unconfirmed messages'):
                self._give_up_all()
            with contextlib.suppress(Exception):
                self.ioloop.close()

    def _on_wake(self) -> None:
        if self.stopping and self.keep_on_stop:
            return
        if self.drain():
            self._schedule_cycle()
        else:
            self._cycle_done()

    def _schedule_cycle(self) -> None:
        if self._cycle is None:
            self._cycle = self.ioloop.call_later(_CYCLE, self._on_cycle)

    def _on_cycle(self) -> None:
        self._cycle = None
        if self.drain():
            self._schedule_cycle()
        else:
            self._cycle_done()

    def _cycle_done(self) -> None:
        # Nothing came during the cycle: idle again. The flag goes down before a last look,
        # so a message queued meanwhile is either seen here or wakes the loop.
        self.wake_pending = False
        if self.drain():
            self.wake_pending = True
            self._schedule_cycle()

    def _on_stop(self) -> None:
        if self.keep_on_stop or self._idle():
            self._finish()
        # else: _on_confirm finishes once the last message is settled.

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.workflow is not None:
            with contextlib.suppress(Exception):
                self.workflow.abort()
        if self.connection is not None and self.connection.is_open:
            with contextlib.suppress(Exception):
                self.connection.close()  # _on_connection_closed stops the loop
                return
        self.ioloop.stop()

    def _idle(self) -> bool:
        return not (self.inflight or self.retry or self.delayed or self.owner._queue)

    # Publishing ------------------------------------------------------------------------------

    def _take_queued(self) -> None:
        waiting = self.owner._queue
        while waiting:
            self.retry.append(waiting.popleft())

    def drain(self) -> bool:
        """Publish everything waiting (retries first); True if anything was sent.

        pika buffers the frames; the I/O loop writes them when the socket is writable, right
        after this callback. Confirms are collected by :meth:`_on_confirm`.
        """
        channel = self.channel
        if channel is None or self.blocked or self.finished:
            return False
        waiting = self.owner._queue
        publish = channel.basic_publish
        sent = False
        while not self.stopping or not self.keep_on_stop:
            if self.retry:
                item = self.retry.popleft()
            elif waiting:
                item = waiting.popleft()
            else:
                break
            if item.exchange not in self.declared:
                if self.declaring is not None:
                    # One declare at a time (pika queues a second one behind the first, which
                    # would let messages overtake it): wait for the answer.
                    self.retry.appendleft(item)
                    break
                self.declaring = item.exchange
                self.declared.add(item.exchange)
                channel.exchange_declare(
                    item.exchange, 'topic', durable=True, callback=self._on_declared
                )
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
                _check_short(item.routing_key, 'routing key')
                publish(item.exchange, item.routing_key, item.body, _PROPERTIES, mandatory=True)
            except (ValueError, TypeError, struct.error, ShortStringTooLong) as err:
                # This message can never be published (e.g. a routing key over 255 bytes).
                item.errors.append(f'it cannot be sent over AMQP: {err}')
                self.owner._keep(item, 'it cannot be sent over AMQP')
                continue
            except Exception:
                # The channel or connection is going away: its close callback requeues.
                self.retry.appendleft(item)
                break
            self.tag += 1
            item.sent_at = time.monotonic()
            item.returned = False
            self.inflight[self.tag] = item
            sent = True
        return sent

    def _on_declared(self, _frame: Any) -> None:
        self.declaring = None
        self.channel_failures = 0
        self._on_wake()

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # A return comes just before the confirm of its message and carries no delivery
        # tag: the next acked message with this routing key and body is the returned one.
        self.returned.append((method.routing_key, body))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
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
            self.channel_failures = 0
            returned = self.returned
            for item in items:
                if returned and returned[0] == (item.routing_key, item.body):
                    returned.popleft()
                    item.returned = True
                    log_unroutable(item.payload, item.routing_key)
            if items:
                self.owner._acked(items)
        else:
            # The broker could not take them (a queue over x-max-length with reject-publish):
            # transient, published again after a back-off, up to CQRS_PUBLISH_RETRIES times.
            for item in items:
                item.attempts += 1
                item.errors.append('nacked by the broker')
            self._give_up(items)
            items = [i for i in items if i.attempts <= get_settings().master.publish_retries]
            if items:
                self.delayed.extend(items)
                delay = backoff(max(i.attempts for i in items))
                self.ioloop.call_later(delay, lambda: self._retry_delayed(items))
        if self.stopping and not self.keep_on_stop and self._idle():
            self._finish()

    def _retry_delayed(self, items: list[_Item]) -> None:
        ids = {id(i) for i in items}
        self.delayed = [i for i in self.delayed if id(i) not in ids]
        self.retry.extend(items)
        self._on_wake()

    def _requeue_inflight(self, reason: str) -> None:
        items = [self.inflight[tag] for tag in sorted(self.inflight)]
        self.inflight.clear()
        self.returned.clear()
        for item in items:
            item.attempts += 1
            item.errors.append(reason)
        self.retry.extendleft(reversed(items))

    def _give_up(self, items: list[_Item]) -> None:
        limit = get_settings().master.publish_retries
        by_attempts: dict[int, list[_Item]] = {}
        for item in items:
            if item.attempts > limit:
                by_attempts.setdefault(item.attempts, []).append(item)
        for attempts, group in by_attempts.items():
            self.owner._keep_many(group, f'not confirmed after {attempts} attempts')

    def _give_up_exhausted(self) -> None:
        limit = get_settings().master.publish_retries
        if not any(item.attempts > limit for item in self.retry):
            return
        keep = [item for item in self.retry if item.attempts > limit]
        self.retry = collections.deque(item for item in self.retry if item.attempts <= limit)
        self._give_up(keep)

    def _give_up_all(self) -> None:
        """The thread ends: keep what was not confirmed (only when asked to, at exit)."""
        if not self.keep_on_stop:
            return
        self._requeue_inflight('the process exited before the broker confirmed')
        self._take_queued()
        items, self.retry = list(self.retry) + self.delayed, collections.deque()
        self.delayed = []
        self.owner._keep_many(items, 'the process exited before the confirm')


_publisher = BackgroundPublisher(
    _Loop,
    # An option that cannot be honoured is the caller's error, not the thread's.
    check=lambda: connection_parameters(get_settings()),
    name='cqrs-async-publisher',
)


submit = _publisher.submit
"""Queue a payload for the background publisher (``submit(sender, payload, routing_key)``);
False: the queue is full, publish it synchronously."""
# The process-wide flush and count, at the path the docs give (every background publisher).
flush = background.flush
pending = background.pending
