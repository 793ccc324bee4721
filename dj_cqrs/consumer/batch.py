"""Apply many deliveries in one database transaction, with the outcome of each one.

A worker hands over the deliveries it could take from the queue without waiting (up to
``CQRS['replica']['CQRS_BATCH_SIZE']``) and acknowledges them together. Messages of plain
replica models (default hooks and manager, no flags that change how a row is written) are
applied in bulk: one read of the existing rows (``pk__in``), the revision rules run in memory in
delivery order, then one ``bulk_create`` for new rows and one ``bulk_update`` per field set. The
rules and the log lines are exactly those of one-by-one apply: the lines a message produces are
held back and written, message by message, only once the transaction has committed.

Everything else takes the one-by-one path of :func:`dj_cqrs.consumer.handler.apply`: models
with custom hooks or flags, DELETE messages and every other message for the same row (so that
tombstones and deletes keep their single-row rules), and every message of a bulk group whose
transaction failed; that fallback is what isolates a bad message: it fails alone and the
others still apply.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connections, models, router, transaction
from django.db.models import signals as model_signals
from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME, SignalType
from dj_cqrs.consumer import handler
from dj_cqrs.consumer.handler import Action, Outcome
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.replica.plan import plan_for

logger = logging.getLogger(LOGGER_NAME)

__all__ = ['Delivery', 'apply_batch', 'bulk_eligible', 'one_by_one']


@dataclass(frozen=True)
class Delivery:
    """A delivery as the batch engine needs it (transports may pass any object with these)."""

    body: bytes
    routing_key: str | None = None


# ---------------------------------------------------------------------------------------------
# Log lines held back until the transaction commits


_held = threading.local()


class _HoldBack(logging.Filter):
    """Keeps this thread's records of the ``django-cqrs`` logger while a hold is active."""

    def filter(self, record: logging.LogRecord) -> bool:
        records = getattr(_held, 'records', None)
        if records is None:
            return True
        records.append(record)
        return False


_filter = _HoldBack()
_filter_lock = threading.Lock()


def _install_filter() -> None:
    if _filter not in logger.filters:
        with _filter_lock:
            if _filter not in logger.filters:
                logger.addFilter(_filter)


@contextmanager
def _holding(records: list[logging.LogRecord]) -> Iterator[None]:
    previous = getattr(_held, 'records', None)
    _held.records = records
    try:
        yield
    finally:
        _held.records = previous


# ---------------------------------------------------------------------------------------------
# Which models can be written in bulk


_DEFAULT_HOOKS: dict[str, Any] = {}


def _default_hooks() -> dict[str, Any]:
    if not _DEFAULT_HOOKS:
        from dj_cqrs.replica.mixin import ReplicaMixin

        for name in ('cqrs_save', 'cqrs_create', 'cqrs_delete'):
            _DEFAULT_HOOKS[name] = getattr(ReplicaMixin, name).__func__
        _DEFAULT_HOOKS['cqrs_update'] = ReplicaMixin.cqrs_update
        _DEFAULT_HOOKS['save'] = models.Model.save
    return _DEFAULT_HOOKS


_eligible: dict[type, bool] = {}


def _static_eligibility(model: type) -> bool:
    from dj_cqrs.replica.manager import ReplicaManager

    meta = getattr(model, '_meta', None)
    if meta is None or meta.abstract or meta.parents:
        return False
    if model.CQRS_NO_DB_OPERATIONS or model.CQRS_SELECT_FOR_UPDATE:
        return False
    if getattr(model, 'CQRS_CUSTOM_SERIALIZATION', False):
        return False
    hooks = _default_hooks()
    for name in ('cqrs_save', 'cqrs_create', 'cqrs_delete'):
        if getattr(getattr(model, name), '__func__', None) is not hooks[name]:
            return False
    if model.cqrs_update is not hooks['cqrs_update'] or model.save is not hooks['save']:
        return False
    if type(model.cqrs) is not ReplicaManager:
        return False
    for model_field in meta.concrete_fields:
        if getattr(model_field, 'auto_now', False) or getattr(model_field, 'auto_now_add', False):
            return False
    return True


def bulk_eligible(model: type) -> bool:
    """Whether messages of ``model`` may be written in bulk (else: one by one).

    Only models whose rows are written exactly as the default hooks write them qualify: no
    overridden ``cqrs_save``/``cqrs_create``/``cqrs_update``/``cqrs_delete``/``save``, default
    ``cqrs`` manager, none of ``CQRS_NO_DB_OPERATIONS``, ``CQRS_CUSTOM_SERIALIZATION``,
    ``CQRS_SELECT_FOR_UPDATE``, no multi-table inheritance, no ``auto_now`` fields and no
    ``pre_save``/``post_save`` receivers (bulk writes send no model signals).
    """
    static = _eligible.get(model)
    if static is None:
        static = _eligible[model] = _static_eligibility(model)
    if not static:
        return False
    return not (
        model_signals.pre_save.has_listeners(model) or model_signals.post_save.has_listeners(model)
    )


def one_by_one() -> bool:
    """Whether this process applies every message in its own transaction."""
    replica = get_settings().replica
    return replica.batch_size <= 1 or not replica.batch_apply


# ---------------------------------------------------------------------------------------------
# The batch


@dataclass
class _Work:
    index: int
    payload: TransportPayload
    model: Any
    records: list[logging.LogRecord] = field(default_factory=list)
    applied: bool = False


class _FallBack(Exception):
    """The bulk path cannot keep one-by-one semantics for this group: apply it one by one."""


def _body_and_key(delivery: Any) -> tuple[Any, str | None]:
    if isinstance(delivery, tuple):
        body, routing_key = delivery
        return body, routing_key
    return delivery.body, getattr(delivery, 'routing_key', None)


def apply_batch(deliveries: Iterable[Any], sender: Any = None) -> list[Outcome]:
    """Apply deliveries (objects with ``body``/``routing_key``, or such pairs); one outcome each.

    Outcomes are in delivery order, with the same actions (ack, reject, retry, dead letter) and
    log lines one-by-one apply would give. With ``CQRS_BATCH_SIZE`` 1 (or batch apply off) this
    is exactly :func:`dj_cqrs.consumer.handler.handle` per delivery.
    """
    items = [_body_and_key(d) for d in deliveries]
    if len(items) <= 1 or one_by_one():
        return [handler.handle(body, key, sender=sender) for body, key in items]

    outcomes: list[Outcome | None] = [None] * len(items)
    solo: list[tuple[int, TransportPayload]] = []
    bulk: list[_Work] = []
    for index, (body, routing_key) in enumerate(items):
        decoded = handler.decode(body, routing_key, sender=sender)
        if isinstance(decoded, Outcome):
            outcomes[index] = decoded
            continue
        model = _bulk_model(decoded)
        if model is None:
            solo.append((index, decoded))
        else:
            bulk.append(_Work(index, decoded, model))

    bulk = _route_deleted_rows_alone(bulk, solo)
    if bulk:
        _install_filter()
        by_alias: dict[str, list[_Work]] = {}
        for work in bulk:
            by_alias.setdefault(router.db_for_write(work.model), []).append(work)
        for alias, works in by_alias.items():
            for work, outcome in _apply_group(alias, works, sender):
                outcomes[work.index] = outcome

    for index, payload in sorted(solo, key=lambda pair: pair[0]):
        outcomes[index] = handler.apply(payload, sender=sender)
    _record_lag([o.payload for o in outcomes if o is not None and o.action is Action.ACK])
    return outcomes  # type: ignore[return-value]


def _bulk_model(payload: TransportPayload) -> Any:
    signal_type = payload.signal_type
    if signal_type not in (SignalType.SAVE, SignalType.SYNC, SignalType.DELETE):
        return None
    model = ReplicaRegistry.models.get(payload.cqrs_id)
    if model is None or not bulk_eligible(model):
        return None
    if signal_type == SignalType.SYNC and model.CQRS_ONLY_DIRECT_SYNCS:
        return None
    if payload.is_expired():
        return None
    return model


def _row_key(payload: TransportPayload) -> tuple[str, str]:
    return payload.cqrs_id, str(payload.pk)


def _route_deleted_rows_alone(
    bulk: list[_Work], solo: list[tuple[int, TransportPayload]]
) -> list[_Work]:
    """DELETEs, and every message of a row that has one, go one by one, in order."""
    deleted = {_row_key(w.payload) for w in bulk if w.payload.signal_type == SignalType.DELETE}
    if not deleted:
        return bulk
    kept = []
    for work in bulk:
        if _row_key(work.payload) in deleted:
            solo.append((work.index, work.payload))
        else:
            kept.append(work)
    return kept


def _apply_group(alias: str, works: list[_Work], sender: Any) -> list[tuple[_Work, Outcome]]:
    """One transaction for the group; on any error, every message of it one by one."""
    from dj_cqrs.replica.timeouts import apply_query_timeouts

    if not connections[alias].in_atomic_block:
        close_old_connections()  # like a request: drop broken or expired connections
    started = time.monotonic()
    by_model: dict[Any, list[_Work]] = {}
    for work in works:
        by_model.setdefault(work.model, []).append(work)
    try:
        for model in by_model:
            apply_query_timeouts(model)
        with transaction.atomic(using=alias):
            for model, model_works in by_model.items():
                _write_model(alias, model, model_works)
    except Exception as err:  # any failure: the one-by-one path isolates the bad message
        logger.debug('CQRS batch of %s messages falls back to one by one: %r', len(works), err)
        return [(w, handler.apply(w.payload, sender=sender)) for w in works]
    duration = time.monotonic() - started
    return [(w, _settle(w, sender, duration)) for w in works]


def _write_model(alias: str, model: Any, works: list[_Work]) -> None:
    """Run the revision rules in memory for ``works`` (delivery order), then write in bulk."""
    manager = model.cqrs
    plan = plan_for(model)
    pk_name = plan.pk_name
    pk_field = model._meta.pk

    staged: list[tuple[_Work, Any, dict[str, Any]]] = []
    for work in works:
        with _holding(work.records):
            mapped = manager._map_save_data(work.payload.instance_data)
        if mapped is None:
            continue
        staged.append((work, pk_field.to_python(mapped[pk_name]), mapped))
    if not staged:
        return

    queryset = (
        model._default_manager.using(alias).filter(pk__in={key for _, key, _ in staged}).order_by()
    )
    if connections[alias].features.has_select_for_update:
        queryset = queryset.select_for_update()
    rows: dict[Any, Any] = {obj.pk: obj for obj in queryset}
    _drop_tombstoned(alias, model, staged, rows)

    created: dict[Any, Any] = {}
    updated: dict[Any, set[str]] = {}
    for work, key, mapped in staged:
        instance = rows.get(key)
        kwargs = plan.to_model_kwargs(mapped)
        if instance is None:
            instance = rows[key] = created[key] = model(**kwargs)
            work.applied = True
            continue
        sync = work.payload.signal_type == SignalType.SYNC
        with _holding(work.records):
            # The replica manager's rules and log lines (held back until commit).
            allowed = manager._revision_allows(instance, mapped['cqrs_revision'], sync)
        work.applied = True
        if not allowed:
            continue
        for name, value in kwargs.items():
            setattr(instance, name, value)
        if key not in created:
            updated.setdefault(key, set()).update(kwargs)

    if created:
        model._default_manager.using(alias).bulk_create(list(created.values()))
    by_fields: dict[frozenset[str], list[Any]] = {}
    pk_names = {pk_name, pk_field.attname}
    for key, names in updated.items():
        by_fields.setdefault(frozenset(names - pk_names), []).append(rows[key])
    for names, objs in by_fields.items():
        if names:
            model._default_manager.using(alias).bulk_update(objs, sorted(names))


def _drop_tombstoned(alias: str, model: Any, staged: list[Any], rows: dict[Any, Any]) -> None:
    """Rows this replica deleted are never created in bulk: the group goes one by one.

    The row locks of :mod:`dj_cqrs.replica.tombstones` are taken first (PostgreSQL), so that
    a DELETE applied meanwhile by another worker cannot slip between this check and the insert.
    """
    from dj_cqrs.models import Tombstone
    from dj_cqrs.replica import tombstones

    absent = sorted({tombstones.pk_text(model, key) for _, key, _ in staged if key not in rows})
    if not absent:
        return
    _lock_rows(alias, model, absent)
    if (
        Tombstone.objects.using(router.db_for_write(Tombstone))
        .filter(cqrs_id=model.CQRS_ID, instance_pk__in=absent)
        .exists()
    ):
        raise _FallBack('tombstoned rows in batch')


def advisory_key(model: Any, pk_text: str) -> int:
    """The key of :func:`dj_cqrs.replica.tombstones.lock_row` for one row (same formula)."""
    digest = hashlib.blake2b(f'{model.CQRS_ID}\x00{pk_text}'.encode(), digest_size=8)
    return int.from_bytes(digest.digest(), 'big', signed=True)


def _lock_rows(alias: str, model: Any, pk_texts: list[str]) -> None:
    """The tombstone row locks of many rows in one statement, in key order (no deadlocks)."""
    connection = connections[alias]
    if connection.vendor != 'postgresql':
        return
    keys = sorted({advisory_key(model, pk) for pk in pk_texts})
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT count(pg_advisory_xact_lock(k)) '
            'FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS keys',
            [keys],
        )


def _settle(work: _Work, sender: Any, duration: float) -> Outcome:
    """After commit: the message's signals and log lines in one-by-one order, and its outcome.

    The lifecycle lines (received, applied, failed) are written by the receivers of the
    lifecycle signals, as for one-by-one apply; the revision-rule lines held back during the
    transaction are written between them.
    """
    payload = work.payload
    signals.message_received.send(sender, payload=payload, routing_key=payload.routing_key)
    for record in work.records:
        logger.handle(record)
    if not work.applied:
        return handler.failed(payload, work.model, None, sender=sender, duration=duration)
    if signals.message_applied.receivers:
        signals.message_applied.send(sender, payload=payload, duration=duration, lag=_lag(payload))
    return Outcome(Action.ACK, payload)


def _lag(payload: TransportPayload) -> float | None:
    """``handler.replication_lag`` with a fast path for the ISO 8601 times masters send."""
    updated = payload.instance_data.get('cqrs_updated')
    if isinstance(updated, str):
        try:
            moment = datetime.datetime.fromisoformat(updated)
        except ValueError:
            return handler.replication_lag(payload)
        if moment.tzinfo is not None:
            return (timezone.now() - moment).total_seconds()
    return handler.replication_lag(payload)


def _record_lag(payloads: Sequence[Any]) -> None:
    """Once per batch: tell observability what was applied (it skips what it already saw)."""
    if not payloads:
        return
    try:
        from dj_cqrs.observability.lag import record_batch
    except ImportError:
        return
    record_batch(payloads)
