"""``InProcessTransport``: master and replica in one process, through the real message path
(encoded, routed, decoded, applied and settled; retries at once). ``published`` and
``dead_letters`` keep what happened for assertions; ``reset()`` clears them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.routing import bindings_for, routing_key_for
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
        cqrs_id = payload.cqrs_id
        if cls.apply and cqrs_id in ReplicaRegistry.models:
            if routing_key in bindings_for(cqrs_id, settings.queue):
                cls.deliver(body, routing_key)
        return True

    @classmethod
    def deliver(cls, body: bytes, routing_key: str | None = None) -> Any:
        """Consume one raw body as a worker would; returns the final outcome."""
        from dj_cqrs.consumer import handler
        from dj_cqrs.consumer.settle import Settler

        settler = Settler(cls, _Primitives(cls))
        while True:
            outcome = handler.handle(body, routing_key, sender=cls)
            settler.settle(_Delivery(body, routing_key), outcome)
            if not settler.holding():
                return outcome
            # The retry happens at once, but the lifecycle is the broker transports' one.
            held = settler.delay_queue.get()
            settler.requeue(held)
            body = held.payload.encode()

    @staticmethod
    def consume(*args: Any, **kwargs: Any) -> None:
        """Nothing to consume: messages are applied when they are published."""
        return None

    @staticmethod
    def clean_connection(*args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class _Delivery:
    """The message being applied (the settle step's delivery)."""

    body: bytes
    routing_key: str | None
    content_type: str | None = None


class _Primitives:
    """The in-process broker's side of the settle step: nothing to acknowledge; a retry is
    applied again by :meth:`InProcessTransport.deliver`, a dead letter is kept."""

    connection_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, transport: type[InProcessTransport]) -> None:
        self.transport = transport

    def ack(self, delivery: object) -> None:
        return None

    ack_all = reject = give_back = remove = ack

    def publish(self, payload: TransportPayload, expiration: float | None) -> None:
        if payload.is_dead_letter:
            settings = get_settings()
            key = routing_key_for(payload, settings.queue, settings.dead_letter_queue)
            with self.transport._lock:
                self.transport.dead_letters.append(Delivery(key, payload.encode()))
