"""Helpers of the public API (names as in django-cqrs 3.1), each a thin call into its home."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dj_cqrs.conf import get_settings
from dj_cqrs.lazy import lazy_exports
from dj_cqrs.values import get_json_valid_value

if TYPE_CHECKING:  # the real functions for type checkers
    from dj_cqrs.dataclasses import get_message_expiration_dt
    from dj_cqrs.master.bulk_relate import bulk_relate_cqrs_serialization
    from dj_cqrs.replica.timeouts import apply_query_timeouts

__all__ = [
    'apply_query_timeouts',
    'bulk_relate_cqrs_serialization',
    'get_delay_queue_max_size',
    'get_json_valid_value',
    'get_message_expiration_dt',
    'get_messages_prefetch_count_per_worker',
]


def get_delay_queue_max_size() -> int | None:
    """Size of a worker's in-memory delay queue (None: unbounded)."""
    return get_settings().replica.delay_queue_max_size


def get_messages_prefetch_count_per_worker() -> int:
    """How many unacked messages a RabbitMQ worker may hold (0: unlimited)."""
    return get_settings().replica.prefetch_count


# Loaded on use: a replica worker imports this module (prefetch count) but no master code.
__getattr__ = lazy_exports(
    __name__,
    {
        'apply_query_timeouts': 'dj_cqrs.replica.timeouts',
        'bulk_relate_cqrs_serialization': 'dj_cqrs.master.bulk_relate',
        'get_message_expiration_dt': 'dj_cqrs.dataclasses',
    },
)
