"""Background publishing for ``KombuTransport`` (``CQRS_PUBLISH_CONFIRMS = 'async'``): one
message at a time, in order, through the process's one Kombu producer connection."""

from __future__ import annotations

import logging
import threading

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport import background
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.background import (
    TICK,
    BackgroundPublisher,
    Item,
    logged,
    release_hold,
)
from dj_cqrs.transport.mixins import log_unroutable
from dj_cqrs.transport.retry import backoff

logger = logging.getLogger(LOGGER_NAME)


class _KombuLoop(background.Loop):
    """The publishing thread's work for Kombu (see the module docstring)."""

    def __init__(self, owner: BackgroundPublisher) -> None:
        super().__init__(owner)  # inflight: the one message being published
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
                # Idle: a tick; after a failure: a back-off (a stop cuts either short).
                delay = self._publish_waiting() if self.retry else TICK
                if delay:
                    self._wake.wait(delay)
                    self._wake.clear()
        except Exception:
            logger.exception('CQRS async publisher: the Kombu publishing thread failed.')
        finally:
            with logged('keeping unconfirmed messages'):
                self._give_up_all()

    def _publish_waiting(self) -> float:
        """Publish what waits, in order; a back-off (seconds) if the broker failed, else 0."""
        state = kombu_transport._producer
        while self.retry:
            if self.stopping and self.keep_on_stop:
                return 0.0
            item = self.retry[0]
            if not self._encoded(item):
                self.retry.popleft()
                continue
            self.inflight[0] = item
            try:
                returned = state.publish_once(item.payload, item.body)
            except Exception as error:
                del self.inflight[0]
                return self._failed(item, error)
            del self.inflight[0]
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
        self._broker_failed(text)
        return backoff(self.failures - 1)


_publisher = BackgroundPublisher(_KombuLoop, check=lambda: None, name='cqrs-kombu-async-publisher')


# The process-wide flush and count, at the path the docs give (every background publisher).
flush = background.flush
pending = background.pending
