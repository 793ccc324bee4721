"""Helpers of the public API (names as in django-cqrs 3.1)."""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone

from dj_cqrs.conf import get_settings
from dj_cqrs.master.bulk_relate import bulk_relate_cqrs_serialization
from dj_cqrs.values import get_json_valid_value

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
    ttl = message_ttl or get_settings().master.message_ttl
    if ttl is None:
        return None
    return timezone.now() + datetime.timedelta(seconds=ttl)


def get_delay_queue_max_size() -> int | None:
    """Size of a worker's in-memory delay queue (None: unbounded)."""
    return get_settings().replica.delay_queue_max_size


def get_messages_prefetch_count_per_worker() -> int:
    """How many unacked messages a RabbitMQ worker may hold (0: unlimited)."""
    size = get_delay_queue_max_size()
    return 0 if size is None else size + 1


def apply_query_timeouts(model_cls: Any) -> None:
    """Set the replica's statement timeout on the model's database connection, if configured."""
    from dj_cqrs.replica.timeouts import apply_query_timeouts as apply

    apply(model_cls)
