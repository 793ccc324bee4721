"""Signals (a leaf: ``Signal()`` objects only): the master's bulk signals, the lifecycle signals.

The lifecycle signals are ours: ``sender`` is the transport class (or None), and the kwargs are
``payload`` (a :class:`~dj_cqrs.dataclasses.TransportPayload` or None) plus those listed.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

post_bulk_create = Signal()
"""Sent by ``Model.cqrs.bulk_create``: kwargs ``instances``, ``using``."""

post_update = Signal()
"""Sent by ``Model.cqrs.bulk_update``: kwargs ``instances``, ``using``."""

message_published = Signal()
"""A message reached the broker (confirmed where the transport confirms): ``duration``."""

message_publish_failed = Signal()
"""A message could not be published: ``error``, ``kept`` (True when kept in the outbox)."""

message_received = Signal()
"""A consumer decoded a message: ``routing_key``."""

message_applied = Signal()
"""A replica applied a message: ``duration``, ``lag`` (seconds since the master's change)."""

message_failed = Signal()
"""A replica failed to apply a message: ``error`` (or None), ``retries``, ``duration``."""

message_delayed = Signal()
"""A failed message waits for a retry: ``delay`` (seconds), ``retries``, ``eta`` (optional)."""

message_requeued = Signal()
"""A delayed message was published again for its retry (``payload.retries`` already + 1)."""

message_dead_lettered = Signal()
"""A message was moved to the dead-letter queue: ``reason``."""

message_rejected = Signal()
"""A body that is not a usable message was rejected: ``body``, ``reason``."""


def __getattr__(name: str) -> Any:
    # The original's path of MasterSignals; imported on use so that this module stays a leaf
    # (a replica-only process never loads the master's publishing code through it).
    if name == 'MasterSignals':
        from dj_cqrs.master.signals import MasterSignals

        return MasterSignals
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
