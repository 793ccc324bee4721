"""Helpers of the public API (names as in django-cqrs 3.1), each a thin call into its home."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from dj_cqrs.conf import get_settings
from dj_cqrs.values import get_json_valid_value

if TYPE_CHECKING:
    from django.db import models

    from dj_cqrs.master.bulk_relate import bulk_relate_cqrs_serialization

__all__ = [
    'apply_query_timeouts',
    'bulk_relate_cqrs_serialization',
    'get_delay_queue_max_size',
    'get_json_valid_value',
    'get_message_expiration_dt',
    'get_messages_prefetch_count_per_worker',
]


def get_message_expiration_dt(message_ttl: int | None = None) -> datetime.datetime | None:
    """When a message published now expires (None: never)."""
    from dj_cqrs.dataclasses import message_expiration_dt

    return message_expiration_dt(message_ttl)


def get_delay_queue_max_size() -> int | None:
    """Size of a worker's in-memory delay queue (None: unbounded)."""
    return get_settings().replica.delay_queue_max_size


def get_messages_prefetch_count_per_worker() -> int:
    """How many unacked messages a RabbitMQ worker may hold (0: unlimited)."""
    return get_settings().replica.prefetch_count


def apply_query_timeouts(model_cls: type[models.Model]) -> None:
    """Set the replica's statement timeout on the model's database connection, if configured."""
    from dj_cqrs.replica.timeouts import apply_query_timeouts as apply

    apply(model_cls)


def __getattr__(name: str) -> Any:
    # Loaded on use: a replica worker imports this module (prefetch count) but no master code.
    if name == 'bulk_relate_cqrs_serialization':
        from dj_cqrs.master.bulk_relate import bulk_relate_cqrs_serialization

        return bulk_relate_cqrs_serialization
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
