"""Background publishing for ``KombuTransport`` (``CQRS_PUBLISH_CONFIRMS = 'async'``).

The thread, the queue, the outbox and the flush at exit are RabbitMQ's
(:mod:`dj_cqrs.transport.background`); this module is the broker side, run in that thread. It
publishes through the process's one Kombu producer connection (the one the synchronous path of
:meth:`KombuTransport.produce` uses, under the same lock), one message at a time and in order:

* AMQP brokers: the channel is in confirm mode (``confirm_publish``), so ``publish`` returns
  once the broker took the message; a message no queue is bound to is logged as unroutable;
* Redis: ``publish`` returns once Redis replied to the ``LPUSH``;
* a failure (connection lost, no confirm within the publish timeout) drops the connection,
  counts an attempt for the message and, after a back-off
  (:func:`dj_cqrs.transport.retry.backoff`), reconnects with Kombu's ``ensure_connection``;
  meanwhile new messages go to the outbox in the saving thread (``CQRS_OUTBOX_HOLD``). A
  message not published after ``CQRS_PUBLISH_RETRIES`` more attempts is kept in the outbox.
"""

from __future__ import annotations

import collections
import logging
import threading

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport import background
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.background import (
    TICK,
    BackgroundPublisher,
    Item,
    hold_new_messages,
    logged,
    release_hold,
)
from dj_cqrs.transport.mixins import log_unroutable
from dj_cqrs.transport.retry import backoff

logger = logging.getLogger(LOGGER_NAME)


class _KombuLoop:
    """The publishing thread's work for Kombu (see the module docstring)."""

    def __init__(self, owner: BackgroundPublisher) -> None:
        self.owner = owner
        self.retry: collections.deque[Item] = collections.deque()
        self.delayed: list[Item] = []  # Kombu has no nack: always empty
        self.inflight: dict[int, Item] = {}  # the one message being published
        self.failures = 0
        self.stopping = False
        self.keep_on_stop = False
        self._wake = threading.Event()

    # Called from other threads.

    def wake(self) -> None:
        if not self._wake.is_set():
            self._wake.set()

    def stop(self, keep_unsettled: bool) -> None:
        self.keep_on_stop = keep_unsettled
        self.stopping = True
        self._wake.set()

    # The thread.

    def run(self) -> None:
        try:
            while True:
                self._take_queued()
                if self.stopping and (self.keep_on_stop or not self.retry):
                    break
                if self.retry:
                    delay = self._publish_waiting()
                    if delay:
                        self._wake.wait(delay)  # a back-off a stop can cut short
                        self._wake.clear()
                    continue
                self._wake.wait(TICK)
                self._wake.clear()
        except Exception:
            logger.exception('CQRS async publisher: the Kombu publishing thread failed.')
        finally:
            with logged('keeping unconfirmed messages'):
                self._give_up_all()

    def _take_queued(self) -> None:
        waiting = self.owner._queue
        while waiting:
            self.retry.append(waiting.popleft())

    def _publish_waiting(self) -> float:
        """Publish what waits, in order; a back-off (seconds) if the broker failed, else 0."""
        state = kombu_transport._producer_connection()
        while self.retry:
            if self.stopping and self.keep_on_stop:
                return 0.0
            item = self.retry[0]
            if item.body is None:
                try:
                    item.body = item.payload.encode()
                except Exception as err:
                    self.retry.popleft()
                    item.errors.append(f'{type(err).__name__}: {err}')
                    self.owner._keep(item, 'its body cannot be encoded')
                    continue
            self.inflight[0] = item
            error, returned = state.publish_once(item.payload, item.body)
            del self.inflight[0]
            if error is not None:
                return self._failed(item, error)
            self.retry.popleft()
            if self.failures:
                self.failures = 0
                release_hold()  # the broker takes messages again: saves come here again
            item.attempts += 1
            if returned:
                item.returned = True
                log_unroutable(item.payload, item.routing_key)
            self.owner._acked([item])
            self._take_queued()
        return 0.0

    def _failed(self, item: Item, err: Exception) -> float:
        self.failures += 1
        text = mask_url(f'{type(err).__name__}: {err}')
        if not self.stopping:
            logger.warning(
                "CQRS couldn't be published: pk = %s (%s). Error: %s. Reconnect...",
                item.payload.pk,
                item.payload.cqrs_id,
                text,
            )
            hold_new_messages()  # the broker is failing: new messages go to the outbox
        # Without a broker nothing gets out: an attempt for everything waiting, as on RabbitMQ.
        self._take_queued()
        limit = get_settings().master.publish_retries
        exhausted: list[Item] = []
        for waiting in self.retry:
            waiting.attempts += 1
            waiting.errors.append(text)
            if waiting.attempts > limit:
                exhausted.append(waiting)
        if exhausted:
            self.retry = collections.deque(i for i in self.retry if i.attempts <= limit)
            self.owner._keep_many(exhausted, f'not confirmed after {limit + 1} attempts')
        return backoff(self.failures - 1)

    def _give_up_all(self) -> None:
        """The thread ends: keep what was not published (only when asked to, at exit)."""
        if not self.keep_on_stop:
            return
        self._take_queued()
        items, self.retry = list(self.retry), collections.deque()
        self.owner._keep_many(items, 'the process exited before the confirm')


_publisher = BackgroundPublisher(_KombuLoop, check=lambda: None, name='cqrs-kombu-async-publisher')


submit = _publisher.submit
"""Queue a payload for the background publisher (``submit(sender, payload, routing_key)``);
False: the queue is full, publish it synchronously."""
# The process-wide flush and count, at the path the docs give (every background publisher).
flush = background.flush
pending = background.pending
