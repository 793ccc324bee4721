"""The publishing thread's pika connection: connect, open a confirming channel, and react when
the broker closes, blocks or refuses (the base of ``async_publisher._Loop``)."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import time
from typing import Any

import pika
from pika.adapters.select_connection import IOLoop
from pika.exceptions import ChannelClosedByBroker

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport.amqp import connection_parameters, describe
from dj_cqrs.transport.background import TICK as _TICK
from dj_cqrs.transport.background import BackgroundPublisher
from dj_cqrs.transport.background import Item as _Item
from dj_cqrs.transport.background import hold_new_messages as _hold_new_messages
from dj_cqrs.transport.background import release_hold as _release_hold
from dj_cqrs.transport.retry import backoff, is_permanent

logger = logging.getLogger(LOGGER_NAME)

CONFIRM_TIMEOUT = 10.0
"""Seconds a published message may wait for its confirm before the connection is reopened."""


def _text(err: BaseException) -> str:
    """``err`` for a log line or an outbox row; pika's connection workflow errors unwrapped to
    the last underlying cause (e.g. ``ConnectionRefusedError``, ``SSLCertVerificationError``)."""
    while True:
        if getattr(err, 'exceptions', None):
            err = err.exceptions[-1]  # type: ignore[attr-defined]
        elif isinstance(getattr(err, 'exception', None), BaseException):
            err = err.exception  # type: ignore[attr-defined]
        else:
            return f'{type(err).__name__}: {mask_url(str(err))}'


_TOO_LARGE = re.compile(r'message size (\d+) is larger than')


class PikaLink:
    """The connection side of the publishing loop; the publishing side (``drain``, confirms,
    giving up) is :class:`dj_cqrs.transport.async_publisher._Loop`, which sets this state."""

    owner: BackgroundPublisher
    ioloop: IOLoop
    retry: collections.deque[_Item]
    inflight: dict[int, _Item]
    returned: collections.deque[tuple[str, bytes]]
    connection: Any  # an open pika.SelectConnection
    channel: Any  # its channel, in confirm mode
    workflow: Any  # pika's connection workflow, while connecting
    declared: set[str]
    declaring: str | None
    tag: int
    blocked: bool
    stopping: bool
    keep_on_stop: bool
    finished: bool
    failures: int
    channel_failures: int
    _ticking: Any

    def _on_wake(self) -> None:
        raise NotImplementedError

    def _on_confirm(self, frame: Any) -> None:
        raise NotImplementedError

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _idle(self) -> bool:
        raise NotImplementedError

    def _take_queued(self) -> None:
        raise NotImplementedError

    def _requeue_inflight(self, reason: str) -> None:
        raise NotImplementedError

    def _give_up_exhausted(self) -> None:
        raise NotImplementedError

    def _connect(self) -> None:
        if self.stopping:
            self._finish()
            return
        try:
            parameters = connection_parameters(get_settings(), blocked_connection_timeout=10)
        except Exception:
            logger.exception('CQRS async publisher: bad connection settings.')
            self.ioloop.call_later(1.0, self._connect)
            return
        for params in parameters:
            # How the broker's management UI and rabbitmqctl list_connections name it.
            params.client_properties = {
                'connection_name': f'dj_cqrs async publisher (pid {os.getpid()})',
                **(params.client_properties or {}),
            }
        # pika's workflow tries each broker connection_attempts times, retry_delay apart.
        self.workflow = pika.SelectConnection.create_connection(
            parameters, self._on_connected, custom_ioloop=self.ioloop
        )

    def _on_connected(self, result: Any) -> None:
        self.workflow = None
        if isinstance(result, BaseException):
            self._on_open_error(result)
            return
        if self.stopping:
            self.connection = result
            self._finish()
            return
        self.connection = result
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
        self.returned.clear()
        _release_hold()  # the broker is reachable again: new messages come here, not the outbox
        self._on_wake()
        if self._ticking is None:
            self._ticking = self.ioloop.call_later(_TICK, self._tick)

    def _on_open_error(self, err: BaseException) -> None:
        self.failures += 1
        text = _text(err)
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
        self._requeue_inflight(_text(reason))
        if (self.retry or self.owner._queue) and not self.stopping:
            _hold_new_messages()  # messages were lost in flight: the broker is failing
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
        _hold_new_messages()

    def _on_unblocked(self, connection: Any, method: Any) -> None:
        self.blocked = False
        logger.warning('CQRS async publisher: the broker accepts messages again.')
        _release_hold()
        self._on_wake()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self.channel:
            return  # an older channel, or the connection's close closed it
        self.channel = None
        if not isinstance(reason, ChannelClosedByBroker):
            return  # closed with its connection: _on_connection_closed takes over
        self.channel_failures += 1
        code, text = reason.reply_code, mask_url(reason.reply_text)
        items = [self.inflight[tag] for tag in sorted(self.inflight)]
        self.inflight.clear()
        self.returned.clear()
        too_large = _TOO_LARGE.search(text) if code == 406 else None
        culprit = None
        if too_large is not None:
            size = int(too_large.group(1))
            culprit = next((i for i in items if i.body is not None and len(i.body) == size), None)
        refused: list[_Item] = []
        if culprit is not None:
            # One message over the broker's max_message_size: only it is refused.
            refused = [culprit]
            items.remove(culprit)
        elif is_permanent(code) and too_large is None:
            # The exchange refuses every message: keep them (and those waiting for the same
            # exchange) instead of publishing them again and again.
            exchanges = {i.exchange for i in items if f"'{i.exchange}'" in text} or {
                i.exchange for i in items
            }
            refused = [i for i in items if i.exchange in exchanges]
            items = [i for i in items if i.exchange not in exchanges]
            waiting = [i for i in self.retry if i.exchange in exchanges]
            self.retry = collections.deque(i for i in self.retry if i.exchange not in exchanges)
            refused += waiting
        else:
            for item in items:
                item.attempts += 1
                item.errors.append(f'channel closed by the broker: ({code}) {text}')
        self.retry.extendleft(reversed(items))
        if refused:
            # One line for the refusal; each message then gets its own ERROR line when it
            # is kept (message_publish_failed), with this reason.
            logger.warning(
                'CQRS async publisher: the broker refused %d message(s) (%s) %s; they are '
                'kept in the outbox, not published again.',
                len(refused),
                ', '.join(f'pk = {i.payload.pk} ({i.payload.cqrs_id})' for i in refused[:5])
                + (' ...' if len(refused) > 5 else ''),
                f'({code}) {text}',
            )
            for item in refused:
                item.attempts += 1
                item.errors.append(f'refused by the broker: ({code}) {text}')
            self.owner._keep_many(refused, 'the broker refused it')
        self._give_up_exhausted()
        # Publishing goes on over a new channel, after a pause if the broker keeps refusing.
        self.ioloop.call_later(backoff(self.channel_failures - 1), self._open_channel)

    def _tick(self) -> None:
        """Every _TICK seconds: a confirm that never comes means the connection is broken."""
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
        self._ticking = self.ioloop.call_later(_TICK, self._tick)
