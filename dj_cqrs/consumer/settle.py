"""The one settle step: carry out each delivery's outcome through its transport's primitives."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Generic, Protocol, TypeVar

from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.consumer.handler import Action, Outcome
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.delay import DelayMessage, DelayQueue
from dj_cqrs.exceptions import UnroutableError
from dj_cqrs.quoting import quote_for_log

logger = logging.getLogger(LOGGER_NAME)


class Delivery(Protocol):
    """A message taken from the queue, not yet settled."""

    body: bytes
    routing_key: str | None
    content_type: str | None


D = TypeVar('D', bound=Delivery)
D_contra = TypeVar('D_contra', bound=Delivery, contravariant=True)


class Primitives(Protocol[D_contra]):
    """What a transport offers for settling the deliveries of one connection."""

    @property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        """Errors that mean the connection is lost: they end the step, the worker reconnects
        and the broker delivers the unsettled messages again."""
        ...

    def ack(self, delivery: D_contra) -> None:
        """Done with it: remove it from the queue."""

    def ack_all(self, deliveries: Sequence[D_contra]) -> None:
        """Done with all of them (one multi-ack where the broker has one)."""

    def reject(self, delivery: D_contra) -> None:
        """Drop it without a copy (not a usable message)."""

    def give_back(self, delivery: D_contra) -> None:
        """Return it to the queue, to be delivered again."""

    def remove(self, delivery: D_contra) -> None:
        """Drop it once its copy (a retry or a dead letter) is published."""

    def publish(self, payload: TransportPayload, expiration: float | None) -> None:
        """Publish a copy and wait for the broker to take it; ``expiration`` in seconds.

        Raises :class:`~dj_cqrs.exceptions.UnroutableError` when no queue is bound to its key.
        """


class Settler(Generic[D]):
    """Acks, rejects, holds failed messages until their retry time, requeues and dead-letters.

    A copy (a retry with ``retries + 1``, or a dead letter) is always published and confirmed
    before the original is removed: a failure in between duplicates a message, never loses it.
    A retry that cannot be published goes to the dead letters; a dead letter that cannot be
    published goes back to the queue, or is rejected if no queue is bound to its key.
    """

    def __init__(self, sender: type, primitives: Primitives[D]) -> None:
        self.sender = sender
        self.primitives = primitives
        self.delay_queue: DelayQueue[D] = DelayQueue(
            max_size=get_settings().replica.delay_queue_max_size
        )

    def holding(self) -> bool:
        """Whether failed messages wait for their retry."""
        return self.delay_queue.qsize() > 0

    def settle_all(self, deliveries: Sequence[D], outcomes: Sequence[Outcome]) -> None:
        """Carry out each delivery's outcome, in delivery order."""
        if len(deliveries) > 1 and not self.holding():
            if all(outcome.action is Action.ACK for outcome in outcomes):
                # No held delivery is older than these: one multi-ack settles exactly them.
                self.primitives.ack_all(deliveries)
                return
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            self.safely(delivery, self.settle, delivery, outcome)

    def settle(self, delivery: D, outcome: Outcome) -> None:
        payload = outcome.payload
        if outcome.action is Action.ACK:
            self.primitives.ack(delivery)
        elif outcome.action is Action.RETRY and payload is not None:
            self.delay(delivery, payload, outcome.delay)
        elif outcome.action is Action.DEAD_LETTER and payload is not None:
            self.dead_letter(delivery, payload, outcome.reason)
        else:
            self.primitives.reject(delivery)

    def safely(self, delivery: D, step: Callable[..., None], *args: object) -> None:
        """Run a step for one delivery; an unexpected error returns the message to the queue
        (it was not moved to the dead letters, so it must not be dropped); the worker goes on."""
        try:
            step(*args)
        except self.primitives.connection_errors:
            raise
        except Exception:
            logger.exception("CQRS couldn't be handled; the message is returned to the queue.")
            self.primitives.give_back(delivery)

    # Retries -----------------------------------------------------------------------------------

    def delay(self, delivery: D, payload: TransportPayload, delay: float) -> None:
        """Hold the delivery ``delay`` seconds (the earliest held one goes at once if full)."""
        if self.delay_queue.full():
            earliest = self.delay_queue.get()
            self.safely(earliest.delivery_tag, self.requeue, earliest)
        eta = timezone.now() + timedelta(seconds=delay)
        self.delay_queue.put(DelayMessage(delivery, payload, eta))
        signals.message_delayed.send(
            self.sender, payload=payload, delay=delay, eta=eta, retries=payload.retries
        )

    def requeue_due(self) -> None:
        """Requeue the held deliveries whose retry time has come."""
        for held in self.delay_queue.get_ready():
            self.safely(held.delivery_tag, self.requeue, held)

    def requeue(self, held: DelayMessage[D]) -> None:
        """Publish the retry (``retries + 1``) to this service's queue, then drop the original."""
        payload, delivery = held.payload, held.delivery_tag
        payload.retries += 1
        payload.is_requeue = True
        started = time.monotonic()
        try:
            self.primitives.publish(payload, None)
        except self.primitives.connection_errors:
            raise
        except Exception as err:
            payload.retries -= 1
            payload.is_requeue = False
            if not isinstance(err, UnroutableError):
                _log_failed_copy("couldn't be requeued", payload)
            reason = 'requeue unroutable' if isinstance(err, UnroutableError) else 'requeue failed'
            self.dead_letter(delivery, payload, reason)
            return
        # As the original: a requeue is logged as published, then as requeued.
        duration = time.monotonic() - started
        signals.message_published.send(self.sender, payload=payload, duration=duration)
        self.primitives.remove(delivery)
        signals.message_requeued.send(self.sender, payload=payload)

    # Dead letters ------------------------------------------------------------------------------

    def dead_letter(self, delivery: D, payload: TransportPayload, reason: str) -> None:
        """Publish to the dead-letter queue (with ``dead_message_ttl``), then drop the original."""
        payload.is_dead_letter = True
        try:
            self.primitives.publish(payload, get_settings().replica.dead_message_ttl)
        except self.primitives.connection_errors:
            raise
        except UnroutableError:
            logger.error(
                "CQRS couldn't be added to dead letter queue: pk = %s (%s), correlation_id = %s. "
                'No queue is bound to its routing key; the message is rejected.',
                quote_for_log(payload.pk),
                payload.cqrs_id,
                quote_for_log(payload.correlation_id),
            )
            self.primitives.reject(delivery)
            return
        except Exception:
            payload.is_dead_letter = False
            _log_failed_copy("couldn't be added to dead letter queue", payload)
            # Kept by the broker, never dropped: it comes back and is tried again.
            self.primitives.give_back(delivery)
            return
        # As the original: a dead letter is logged as added to the DLQ, not as published.
        self.primitives.remove(delivery)
        signals.message_dead_lettered.send(self.sender, payload=payload, reason=reason)


def _log_failed_copy(what: str, payload: TransportPayload) -> None:
    logger.exception(
        'CQRS %s: pk = %s (%s), correlation_id = %s.',
        what,
        quote_for_log(payload.pk),
        payload.cqrs_id,
        quote_for_log(payload.correlation_id),
    )
