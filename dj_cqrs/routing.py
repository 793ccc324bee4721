"""Routing keys of the original's topology (a leaf: shared by the master, transports, consumer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dj_cqrs.constants import SignalType

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload


def routing_key_for(
    payload: TransportPayload, queue: str | None, dead_letter_queue: str | None
) -> str:
    """The routing key a payload is published with (``<cqrs_id>`` for a broadcast)."""
    cqrs_id = payload.cqrs_id
    # Dead letters and requeues first: a consumed direct SYNC carries its queue (read from the
    # routing key), and sending it back to that queue instead of the dead letters would loop.
    if getattr(payload, 'is_dead_letter', False):
        return f'cqrs.{dead_letter_queue}.{cqrs_id}'
    if getattr(payload, 'is_requeue', False):
        return f'cqrs.{queue}.{cqrs_id}'
    if payload.signal_type == SignalType.SYNC and payload.queue:
        return f'cqrs.{payload.queue}.{cqrs_id}'
    return cqrs_id


def queue_from_routing_key(routing_key: str, cqrs_id: str) -> str | None:
    """The replica queue a message was addressed to (None for a broadcast key)."""
    prefix, suffix = 'cqrs.', f'.{cqrs_id}'
    if routing_key.startswith(prefix) and routing_key.endswith(suffix):
        queue = routing_key[len(prefix) : len(routing_key) - len(suffix)]
        return queue or None
    return None


def bindings_for(cqrs_id: str, queue: str | None) -> tuple[str, str]:
    """The routing keys bound to a replica queue for one ``cqrs_id``."""
    return cqrs_id, f'cqrs.{queue}.{cqrs_id}'
