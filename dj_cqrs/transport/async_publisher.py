"""Asynchronous publisher confirms for ``RabbitMQTransport`` (``CQRS_PUBLISH_CONFIRMS='async'``):
the publishing thread's pika ``SelectConnection`` (behaviour: ``docs/transports.md``)."""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import struct
import time
from typing import Any

import pika
from pika import spec
from pika.adapters.select_connection import IOLoop
from pika.exceptions import ChannelClosedByBroker, ShortStringTooLong

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport import background
from dj_cqrs.transport.amqp import connection_parameters, describe
from dj_cqrs.transport.background import BackgroundPublisher, attempted
from dj_cqrs.transport.mixins import log_unroutable
from dj_cqrs.transport.publisher import message_properties
from dj_cqrs.transport.refusals import check_short, error_text, keep_refused, split_refused
from dj_cqrs.transport.retry import backoff

logger = logging.getLogger(LOGGER_NAME)

_PROPERTIES = message_properties()
"""The properties of every message ``produce`` sends (text/plain, persistent)."""
_CYCLE = 0.001
"""While messages keep coming, the thread publishes them in cycles of this many seconds (the
first message of a burst goes out at once)."""
CONFIRM_TIMEOUT = 10.0
"""Seconds a published message may wait for its confirm before the connection is reopened."""


class _Loop(background.Loop):
    """The publishing thread: everything runs inside pika's I/O loop, except :meth:`wake` and
    :meth:`stop`, which other threads call (through ``add_callback_threadsafe``)."""

    def __init__(self, owner: BackgroundPublisher) -> None:
        super().__init__(owner)
        self.ioloop = IOLoop()
        self.returned: collections.deque[tuple[str, bytes]] = collections.deque()
        self.connection: Any = None  # an open pika.SelectConnection
        self.channel: Any = None  # its channel, in confirm mode
        self.workflow: Any = None  # pika's connection workflow, while connecting
        self.declared: set[str] = set()
        self.declaring: str | None = None
        self.tag = 0
        self.blocked = False
        self.finished = False
        self.channel_failures = 0  # channels the broker closed in a row
        self.wake_pending = False
        self._cycle: Any = None
        self._ticking: Any = None

    # The connection ------------------------------------------------------------------------------

    def _connect(self) -> None:
        if self.stopping:
            self._finish()
            return
        # client_properties: how the broker's management UI and rabbitmqctl list_connections
        # name the connection.
        name = {'connection_name': f'dj_cqrs async publisher (pid {os.getpid()})'}
        try:
            parameters = connection_parameters(
                get_settings(), blocked_connection_timeout=10, client_properties=name
            )
        except Exception:
            logger.exception('CQRS async publisher: bad connection settings.')
            self.ioloop.call_later(1.0, self._connect)
            return
        # pika's workflow tries each broker connection_attempts times, retry_delay apart.
        self.workflow = pika.SelectConnection.create_connection(
            parameters, self._on_connected, custom_ioloop=self.ioloop
        )

    def _on_connected(self, result: Any) -> None:
        self.workflow = None
        if isinstance(result, BaseException):
            self._on_open_error(result)
            return
        self.connection = result
        if self.stopping:
            self._finish()
            return
        self.blocked = False
        result.add_on_close_callback(self._on_connection_closed)
        result.add_on_connection_blocked_callback(self._on_blocked)
        result.add_on_connection_unblocked_callback(self._on_unblocked)
        self._open_channel()

    def _open_channel(self) -> None:
        connection = self.connection
        if connection is None or not connection.is_open or self.finished:
            return
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(
            self._on_confirm, callback=lambda _frame: self._on_confirming(channel)
        )

    def _on_confirming(self, channel: Any) -> None:
        self.channel = channel
        self.failures = 0
        self.declared.clear()
        self.declaring = None
        self.tag = 0
        self.returned.clear()  # an older channel's returns (each channel starts here)
        # The broker is reachable again: new messages come here, not the outbox.
        background.release_hold()
        self._on_wake()
        if self._ticking is None:
            self._ticking = self.ioloop.call_later(background.TICK, self._tick)

    def _on_open_error(self, err: BaseException) -> None:
        self.failures += 1
        text = error_text(err)
        if not self.stopping:
            logger.warning(
                'CQRS async publisher cannot connect to %s: %s. Reconnect...',
                describe(get_settings()),
                text,
            )
        self._broker_failed(text)
        if self.stopping:
            self._finish()
        else:
            self.ioloop.call_later(backoff(self.failures), self._connect)

    def _on_connection_closed(self, connection: Any, reason: BaseException) -> None:
        if connection is not self.connection:
            return
        self.connection = self.channel = None
        if self.finished:
            self.ioloop.stop()
            return
        if not self.stopping:
            self.failures += 1
            logger.warning(
                'CQRS async publisher connection closed: %s. Reconnect...', mask_url(str(reason))
            )
        self._requeue_inflight(error_text(reason))
        if (self.retry or self.owner._queue) and not self.stopping:
            background.hold_new_messages()  # messages were lost in flight: the broker is failing
        self._give_up_exhausted()
        if self.stopping and (self.keep_on_stop or self._idle()):
            self._finish()
        else:
            self.ioloop.call_later(backoff(self.failures), self._connect)

    def _on_blocked(self, connection: Any, method: Any) -> None:
        self.blocked = True
        reason = getattr(method.method, 'reason', '')
        logger.warning(
            'CQRS async publisher: the broker blocks publishing (%s); messages wait for it, '
            'new ones are kept in the outbox.',
            reason,
        )
        background.hold_new_messages()

    def _on_unblocked(self, connection: Any, method: Any) -> None:
        self.blocked = False
        logger.warning('CQRS async publisher: the broker accepts messages again.')
        background.release_hold()
        self._on_wake()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self.channel:
            return  # an older channel, or the connection's close closed it
        self.channel = None
        if not isinstance(reason, ChannelClosedByBroker):
            return  # closed with its connection: _on_connection_closed takes over
        self.channel_failures += 1
        code, text = reason.reply_code, mask_url(reason.reply_text)
        inflight = [self.inflight[tag] for tag in sorted(self.inflight)]
        self.inflight.clear()
        refused, items, self.retry = split_refused(code, text, inflight, self.retry)
        if not refused:
            attempted(items, f'channel closed by the broker: ({code}) {text}')
        self.retry.extendleft(reversed(items))
        if refused:
            keep_refused(self.owner, refused, f'({code}) {text}')
        self._give_up_exhausted()
        # Publishing goes on over a new channel, after a pause if the broker keeps refusing.
        self.ioloop.call_later(backoff(self.channel_failures - 1), self._open_channel)

    def _tick(self) -> None:
        """Every TICK seconds: a confirm that never comes means the connection is broken."""
        self._ticking = None
        if self.channel is None:
            return  # the next channel starts its own ticks
        if self.inflight and not self.blocked:
            oldest = self.inflight[next(iter(self.inflight))]
            if time.monotonic() - oldest.sent_at > CONFIRM_TIMEOUT:
                logger.warning(
                    'CQRS async publisher: no confirm within %s s; reconnecting.', CONFIRM_TIMEOUT
                )
                with contextlib.suppress(Exception):
                    self.connection.close(320, 'no confirm')
                return
        self._ticking = self.ioloop.call_later(background.TICK, self._tick)

    # Called from other threads.

    def wake(self) -> None:
        # Waking the thread costs the caller a system call: the first message of a burst
        # wakes it and is sent at once; while the thread works (see _on_wake) callers only
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
            with background.logged('keeping unconfirmed messages'):
                self._give_up_all()
            with contextlib.suppress(Exception):
                self.ioloop.close()

    def _on_wake(self) -> None:
        if self.stopping and self.keep_on_stop:
            return
        if self.drain():
            self._schedule_cycle()
            return
        # Nothing came during the cycle: idle again. The flag goes down before a last look,
        # so a message queued meanwhile is either seen here or wakes the loop.
        self.wake_pending = False
        if self.drain():
            self.wake_pending = True
            self._schedule_cycle()

    def _schedule_cycle(self) -> None:
        if self._cycle is None:
            self._cycle = self.ioloop.call_later(_CYCLE, self._on_cycle)

    def _on_cycle(self) -> None:
        self._cycle = None
        self._on_wake()

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

    def drain(self) -> bool:
        """Publish everything waiting (retries first); True if anything was sent."""
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
            if not self._encoded(item):
                continue
            try:
                check_short(item.routing_key, 'routing key')
                publish(item.exchange, item.routing_key, item.body, _PROPERTIES, mandatory=True)
            except (ValueError, TypeError, struct.error, ShortStringTooLong) as err:
                # This message can never be published (e.g. a routing key over 255 bytes).
                item.errors.append(f'it cannot be sent over AMQP: {err}')
                self.owner._keep_many([item], 'it cannot be sent over AMQP')
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
        if method.multiple:  # every tag up to this one (the dict is in tag order)
            tags = list(itertools.takewhile(lambda t: t <= tag, inflight))
        else:
            tags = [tag] if tag in inflight else []
        items = [inflight.pop(t) for t in tags]
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
            attempted(items, 'nacked by the broker')
            items = self._give_up(items)
            if items:
                self.delayed.extend(items)
                delay = backoff(max(i.attempts for i in items))
                self.ioloop.call_later(delay, lambda: self._retry_delayed(items))
        if self.stopping and not self.keep_on_stop and self._idle():
            self._finish()

    def _retry_delayed(self, items: list[background.Item]) -> None:
        ids = {id(i) for i in items}
        self.delayed = [i for i in self.delayed if id(i) not in ids]
        self.retry.extend(items)
        self._on_wake()


_publisher = BackgroundPublisher(
    _Loop,
    # An option that cannot be honoured is the caller's error, not the thread's.
    check=lambda: connection_parameters(get_settings()),
    name='cqrs-async-publisher',
)


# The process-wide flush and count, at the path the docs give (every background publisher).
flush = background.flush
pending = background.pending
