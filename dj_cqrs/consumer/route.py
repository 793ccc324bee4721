"""Route one decoded message to its replica model's ``cqrs_save`` or ``cqrs_delete``."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, cast

from django.db import Error, close_old_connections, connections, router, transaction

from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME, SIGNAL_TYPES, SignalType
from dj_cqrs.protocols import ReplicaModel
from dj_cqrs.quoting import quote_for_log
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.replica import rowlocks

if TYPE_CHECKING:
    from django.db.models import Model

    from dj_cqrs.dataclasses import TransportPayload

logger = logging.getLogger(LOGGER_NAME)


def consume(payload: TransportPayload) -> object:
    """Apply one payload to the replica; a falsy result means failure.

    The hooks get their own copy of the message data (of the JSON tree: a ``deepcopy``'s memo
    of every object would cost more than the body itself).
    """
    return route_signal_to_replica_model(
        payload.signal_type,
        payload.cqrs_id,
        copy_tree(payload.instance_data),
        copy_tree(payload.previous_data),
        copy_tree(payload.meta),
        payload.queue,
    )


def copy_tree(value: Any) -> Any:
    """A copy of the dicts and lists of decoded JSON; the leaves (immutable) are shared."""
    kind = type(value)
    if kind is dict:
        return {key: copy_tree(item) for key, item in value.items()}
    if kind is list:
        return [copy_tree(item) for item in value]
    if isinstance(value, (dict, list, set)):
        return copy.deepcopy(value)  # a Python caller's own container types
    return value


def route_signal_to_replica_model(
    signal_type: str,
    cqrs_id: str,
    instance_data: dict[str, Any],
    previous_data: dict[str, Any] | None = None,
    meta: Any = None,
    queue: str | None = None,
) -> object:
    """Call the replica model's ``cqrs_save``/``cqrs_delete`` for one message."""
    if signal_type not in SIGNAL_TYPES:
        logger.error('Bad signal type "%s" for CQRS_ID "%s".', signal_type, cqrs_id)
        return None
    model = ReplicaRegistry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        return None
    return write(model, signal_type, instance_data, previous_data, meta, queue)


def write(
    model: ReplicaModel,
    signal_type: str,
    instance_data: dict[str, Any],
    previous_data: dict[str, Any] | None,
    meta: Any,
    queue: str | None,
) -> object:
    """:func:`route_signal_to_replica_model` for a signal type and model already checked."""
    if signal_type == SignalType.SYNC and model.CQRS_ONLY_DIRECT_SYNCS:
        if queue != get_settings().queue:
            return True
    if model.CQRS_NO_DB_OPERATIONS:
        return _apply(model, signal_type, instance_data, previous_data, meta)

    alias = router.db_for_write(cast('type[Model]', model))
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
        logger.error(
            '%s\nCQRS %s error: pk = %s, cqrs_revision = %s (%s).',
            err,
            signal_type,
            quote_for_log(instance_data.get(_pk_name(model))),
            instance_data.get('cqrs_revision'),
            model.CQRS_ID,
        )
        log_timed_out_queries(err, model)
        return None
    finally:
        rowlocks.release_ended(connections[alias])  # named locks of a rolled back transaction


def _pk_name(model: ReplicaModel) -> str:
    meta = getattr(model, '_meta', None)
    if meta is None or meta.abstract:
        return 'id'
    return meta.pk.name


def _apply(
    model: ReplicaModel,
    signal_type: str,
    instance_data: dict[str, Any],
    previous_data: dict[str, Any] | None,
    meta: Any,
) -> object:
    # Exactly the original's call: overrides (``**kwargs``, or without a ``sync`` or ``meta``
    # parameter) see the same arguments. ``previous_data`` goes as sent: ``{}`` is not None.
    extra: dict[str, Any] = {'meta': meta} if model.CQRS_META else {}
    if signal_type == SignalType.DELETE:
        return model.cqrs_delete(instance_data, **extra)
    if signal_type == SignalType.SYNC:
        extra['sync'] = True
    return model.cqrs_save(instance_data, previous_data=previous_data, **extra)
