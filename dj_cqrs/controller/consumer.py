"""Route a consumed message to its replica model (public path of django-cqrs 3.1)."""

from __future__ import annotations

import copy
import logging
from typing import Any

from django.db import Error, close_old_connections, connections, router, transaction

from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME, SIGNAL_TYPES, SignalType
from dj_cqrs.registries import ReplicaRegistry

logger = logging.getLogger(LOGGER_NAME)


def consume(payload: Any) -> Any:
    """Apply one payload to the replica; a falsy result means failure."""
    payload = copy.deepcopy(payload)
    return route_signal_to_replica_model(
        signal_type=payload.signal_type,
        cqrs_id=payload.cqrs_id,
        instance_data=payload.instance_data,
        previous_data=payload.previous_data,
        meta=payload.meta,
        queue=payload.queue,
    )


def route_signal_to_replica_model(
    signal_type: str,
    cqrs_id: str,
    instance_data: dict[str, Any],
    previous_data: dict[str, Any] | None = None,
    meta: Any = None,
    queue: str | None = None,
) -> Any:
    """Call the replica model's ``cqrs_save``/``cqrs_delete`` for one message."""
    if signal_type not in SIGNAL_TYPES:
        logger.error('Bad signal type "%s" for CQRS_ID "%s".', signal_type, cqrs_id)
        return None
    model = ReplicaRegistry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        return None
    if signal_type == SignalType.SYNC and model.CQRS_ONLY_DIRECT_SYNCS:
        if queue != get_settings().queue:
            return True
    if model.CQRS_NO_DB_OPERATIONS:
        return _apply(model, signal_type, instance_data, previous_data, meta)

    alias = router.db_for_write(model)
    if not connections[alias].in_atomic_block:
        # Like a request: drop broken or expired connections, but never the connection of a
        # caller's open transaction (closing it there would lose their work).
        close_old_connections()
    from dj_cqrs.replica.timeouts import apply_query_timeouts, log_timed_out_queries

    apply_query_timeouts(model)
    try:
        with transaction.atomic(using=alias, savepoint=False):
            return _apply(model, signal_type, instance_data, previous_data, meta)
    except Error as err:
        pk_name = _pk_name(model)
        logger.error(
            '%s\nCQRS %s error: pk = %s, cqrs_revision = %s (%s).',
            err,
            signal_type,
            instance_data.get(pk_name) if pk_name else None,
            instance_data.get('cqrs_revision'),
            cqrs_id,
        )
        log_timed_out_queries(err, model)
        return None


def _pk_name(model: Any) -> str | None:
    meta = getattr(model, '_meta', None)
    if meta is None or meta.abstract:
        return 'id'
    return meta.pk.name


def _apply(
    model: Any,
    signal_type: str,
    instance_data: dict[str, Any],
    previous_data: dict[str, Any] | None,
    meta: Any,
) -> Any:
    # Exactly the original's call: overrides (``**kwargs``, or without a ``sync`` or ``meta``
    # parameter) see the same arguments. ``previous_data`` goes as sent: ``{}`` is not None.
    extra: dict[str, Any] = {'meta': meta} if model.CQRS_META else {}
    if signal_type == SignalType.DELETE:
        return model.cqrs_delete(instance_data, **extra)
    if signal_type == SignalType.SYNC:
        extra['sync'] = True
    return model.cqrs_save(instance_data, previous_data=previous_data, **extra)
