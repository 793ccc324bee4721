"""The one consumer loop: take what is waiting, apply it as one batch, settle each delivery."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, Protocol

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.consumer.batch import apply_batch, take_batch
from dj_cqrs.consumer.handler import Outcome, crash_outcome
from dj_cqrs.consumer.settle import D, Primitives, Settler
from dj_cqrs.quoting import body_for_log, quote_for_log

logger = logging.getLogger(LOGGER_NAME)

ACCEPTED_CONTENT_TYPES = frozenset(('application/json', 'text/plain'))
"""MIME types of the bodies a worker reads (no pickle, no YAML): JSON text only. A delivery
without a content type (the RabbitMQ transport reports none, as the original) is read."""

Decide = Callable[[Sequence[D]], list[Outcome]]


class Source(Primitives[D], Protocol[D]):
    """A transport's deliveries on one open connection, with its settle primitives."""

    pending: deque[D]
    """Deliveries received and not yet taken, oldest first."""

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for deliveries (added to ``pending``)."""

    def take_ready(self, size: int) -> None:
        """Add the deliveries already waiting to ``pending``, up to ``size``, without waiting."""

    def call(self, decide: Decide[D], deliveries: Sequence[D]) -> list[Outcome]:
        """``decide(deliveries)``, keeping the connection alive meanwhile (heartbeats)."""
        ...


class ConsumerLoop(Generic[D]):
    """Serves one connection's deliveries until ``stop`` is set or the connection breaks.

    Each round waits (up to ``idle_tick``) only when nothing is pending, so a partial batch goes
    at once, applies up to ``CQRS_BATCH_SIZE`` deliveries, settles each one, then requeues the
    held messages whose retry time has come.
    """

    DELAYED_TICK = 0.25
    """Longest wait while failed messages are held for a retry."""

    def __init__(
        self, sender: type, source: Source[D], stop: threading.Event, idle_tick: float = 1.0
    ) -> None:
        self.sender = sender
        self.source = source
        self.stop = stop
        self.idle_tick = idle_tick
        self.settler: Settler[D] = Settler(sender, source)

    def run(self) -> None:
        size = max(1, get_settings().replica.batch_size)
        source, settler, pending = self.source, self.settler, self.source.pending
        while not self.stop.is_set():
            if not pending:
                source.wait(self.DELAYED_TICK if settler.holding() else self.idle_tick)
            if pending and len(pending) < size:
                source.take_ready(size)
            if pending:
                self.process(take_batch(pending, size))
            settler.requeue_due()

    def decide(self, deliveries: Sequence[D]) -> list[Outcome]:
        """The outcome of each delivery, applied as one batch (in the transport's thread)."""
        return apply_batch(deliveries, sender=self.sender)

    def process(self, deliveries: Sequence[D]) -> None:
        """Apply ``deliveries`` as one batch and settle each one."""
        accepted = [delivery for delivery in deliveries if self.accepts(delivery)]
        if not accepted:
            return
        try:
            outcomes = self.source.call(self.decide, accepted)
        except self.source.connection_errors:
            raise
        except Exception as err:
            # A bug, not a bad message (the handler turns those into outcomes). In a batch, each
            # delivery is tried again alone, so that one message's failure costs no other; a
            # delivery that fails alone is kept in the dead letters (never dropped).
            logger.exception('CQRS service exception')
            if len(accepted) > 1:
                for delivery in accepted:
                    self.process([delivery])
                return
            (delivery,) = accepted
            outcomes = [crash_outcome(delivery.body, delivery.routing_key, err)]
        self.settler.settle_all(accepted, outcomes)

    def accepts(self, delivery: D) -> bool:
        """JSON content types only; any other message is rejected (logged, signalled)."""
        content_type = delivery.content_type
        if not content_type or content_type in ACCEPTED_CONTENT_TYPES:
            return True
        reason = f'content type {content_type!r} is not accepted (JSON only)'
        body = delivery.body
        logger.error("CQRS couldn't be parsed: %s. (%s)", body_for_log(body), quote_for_log(reason))
        signals.message_rejected.send(self.sender, payload=None, body=body, reason=reason)
        self.settler.safely(delivery, self.source.reject, delivery)
        return False
