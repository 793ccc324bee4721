"""``InProcessTransport``: master and replica in one process, through the real message path.

Each published payload is encoded to the exact wire body, routed by its routing key like
RabbitMQ would route it to this service's queue, decoded again and applied by the same
consumer code the broker transports use, retries and dead letters included (retries happen
at once, without waiting). Use it to test your own master and replica models without a broker::

    CQRS = {'transport': 'dj_cqrs.transport.InProcessTransport', 'queue': 'replica'}

What happened is kept for assertions: ``InProcessTransport.published`` (bodies with their
routing keys) and ``InProcessTransport.dead_letters``. ``InProcessTransport.reset()`` clears them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.routing import routing_key_for
from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.mixins import LoggingMixin

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload


@dataclass(frozen=True)
class Delivery:
    """One published message as the broker would have it."""

    routing_key: str
    body: bytes


class InProcessTransport(LoggingMixin, BaseTransport):
    published: ClassVar[list[Delivery]] = []
    dead_letters: ClassVar[list[Delivery]] = []
    apply: ClassVar[bool] = True
    _lock: ClassVar[threading.RLock] = threading.RLock()

    supports_queue_stats = True
    applies_in_process = True

    @classmethod
    def broker_description(cls) -> str:
        return 'in process'

    @classmethod
    def queue_stats(cls, queue: str) -> tuple[int | None, int | None]:
        """Nothing waits in process (messages are applied when published); dead letters do."""
        if queue == get_settings().dead_letter_queue:
            return len(cls.dead_letters), None
        return 0, None

    @classmethod
    def reset(cls) -> None:
        cls.published.clear()
        cls.dead_letters.clear()

    @classmethod
    def produce(cls, payload: TransportPayload) -> bool:
        started = time.monotonic()
        settings = get_settings()
        routing_key = routing_key_for(payload, settings.queue, settings.dead_letter_queue)
        body = payload.encode()
        with cls._lock:
            cls.published.append(Delivery(routing_key, body))
        # Log lines come from the lifecycle signal receivers (dj_cqrs.observability.logging).
        signals.message_published.send(cls, payload=payload, duration=time.monotonic() - started)
        if cls.apply and cls._routed_here(routing_key, payload.cqrs_id):
            cls.deliver(body, routing_key)
        return True

    @classmethod
    def _routed_here(cls, routing_key: str, cqrs_id: str) -> bool:
        from dj_cqrs.registries import ReplicaRegistry

        queue = get_settings().queue
        if cqrs_id not in ReplicaRegistry.models:
            return False
        return routing_key in (cqrs_id, f'cqrs.{queue}.{cqrs_id}')

    @classmethod
    def deliver(cls, body: bytes, routing_key: str | None = None) -> Any:
        """Consume one raw body as a worker would; returns the final outcome."""
        from dj_cqrs.consumer import handler

        outcome = handler.handle(body, routing_key, sender=cls)
        while outcome.action is handler.Action.RETRY and outcome.payload is not None:
            payload = outcome.payload
            # The retry happens at once, but the lifecycle is the broker transports' one.
            signals.message_delayed.send(
                cls, payload=payload, delay=outcome.delay, retries=payload.retries
            )
            payload.retries += 1
            payload.is_requeue = True
            started = time.monotonic()
            body = payload.encode()
            # As the original: a requeue is logged as published, then as requeued.
            signals.message_published.send(
                cls, payload=payload, duration=time.monotonic() - started
            )
            signals.message_requeued.send(cls, payload=payload)
            outcome = handler.handle(body, routing_key, sender=cls)
        if outcome.action is handler.Action.DEAD_LETTER and outcome.payload is not None:
            payload = outcome.payload
            payload.is_dead_letter = True
            settings = get_settings()
            key = routing_key_for(payload, settings.queue, settings.dead_letter_queue)
            with cls._lock:
                cls.dead_letters.append(Delivery(key, payload.encode()))
            signals.message_dead_lettered.send(cls, payload=payload, reason=outcome.reason)
        return outcome

    @staticmethod
    def consume(*args: Any, **kwargs: Any) -> None:
        """Nothing to consume: messages are applied when they are published."""
        return None

    @staticmethod
    def clean_connection(*args: Any, **kwargs: Any) -> None:
        return None
