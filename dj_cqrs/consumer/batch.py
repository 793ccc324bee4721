"""Apply many deliveries in one database transaction, with the outcome of each one.

A worker hands over the deliveries it could take from the queue without waiting (up to
``CQRS['replica']['CQRS_BATCH_SIZE']``) and acknowledges them together. Messages of plain
replica models (default hooks and manager, no flags that change how a row is written) are
applied in bulk: one read of the existing rows (pk and revision, ``FOR UPDATE`` on PostgreSQL),
the revision rules run in memory in delivery order, then one ``INSERT`` for the new rows and one
``UPDATE ... WHERE pk = %s`` per column set, each an ``executemany`` of values converted as
Django converts them (``get_db_prep_save``; models with unusual columns use ``bulk_create`` and
``bulk_update`` instead). The rules and the log lines are exactly those of one-by-one apply: the
lines a message produces are held back and written, message by message, only once the
transaction has committed. Replica lag is recorded once per batch (``lag.record_batch``).

Everything else takes the one-by-one path of :func:`dj_cqrs.consumer.handler.apply`: models
with custom hooks or flags, DELETE messages and every other message for the same row (so that
tombstones and deletes keep their single-row rules), and every message of a bulk group whose
transaction failed; that fallback is what isolates a bad message: it fails alone and the
others still apply.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
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
from dj_cqrs.hooks import all_default
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.replica import rowlocks
from dj_cqrs.replica.plan import plan_for, pre_save_is_plain
from dj_cqrs.threadlocal import local_value

logger = logging.getLogger(LOGGER_NAME)

__all__ = ['Delivery', 'apply_batch', 'bulk_eligible', 'one_by_one', 'take_batch']


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
    with local_value(_held, 'records', records):
        yield


# ---------------------------------------------------------------------------------------------
# Which models can be written in bulk


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
    if type(model.cqrs) is not ReplicaManager:
        return False
    # Bulk writes run no Field.pre_save(): every field must store exactly what it is given.
    return all(pre_save_is_plain(f, adding=True) for f in meta.concrete_fields)


def bulk_eligible(model: type) -> bool:
    """Whether messages of ``model`` may be written in bulk (else: one by one).

    Only models whose rows are written exactly as the default hooks write them qualify: no
    overridden ``cqrs_save``/``cqrs_create``/``cqrs_update``/``cqrs_delete``/``save``, default
    ``cqrs`` manager, none of ``CQRS_NO_DB_OPERATIONS``, ``CQRS_CUSTOM_SERIALIZATION``,
    ``CQRS_SELECT_FOR_UPDATE``, no multi-table inheritance, no field whose ``pre_save()``
    computes its value (``auto_now``, custom fields) and no
    ``pre_save``/``post_save`` receivers (bulk writes send no model signals).
    """
    static = _eligible.get(model)
    if static is None:
        static = _eligible[model] = _static_eligibility(model)
    if not static:
        return False
    # Hooks and receivers can change at any time (a test patches a hook): checked per batch.
    if not _default_hooks(model):
        return False
    return not (
        model_signals.pre_save.has_listeners(model) or model_signals.post_save.has_listeners(model)
    )


_REPLICA_HOOKS = ('cqrs_save', 'cqrs_create', 'cqrs_update', 'cqrs_delete')


def _default_hooks(model: type) -> bool:
    from dj_cqrs.replica.mixin import ReplicaMixin

    return all_default(model, _REPLICA_HOOKS, ReplicaMixin) and all_default(
        model, ('save', 'save_base'), models.Model
    )


def one_by_one() -> bool:
    """Whether this process applies every message in its own transaction."""
    replica = get_settings().replica
    return replica.batch_size <= 1 or not replica.batch_apply


def take_batch(pending: deque[Any], size: int, body_size: Callable[[Any], int]) -> list[Any]:
    """Take the next batch from the left of ``pending``: up to ``size`` deliveries, and no more
    body bytes than ``CQRS_MAX_MESSAGE_SIZE`` (the first delivery is always taken).

    A batch is decoded whole before it is applied, so its bytes, not only its count, bound the
    worker's memory: a batch of 100 bodies of 8 MB would otherwise be decoded at once.
    """
    budget = get_settings().replica.max_message_size
    batch = [pending.popleft()]
    used = body_size(batch[0])
    while pending and len(batch) < size:
        used += body_size(pending[0])
        if used > budget:
            break
        batch.append(pending.popleft())
    return batch


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
    log lines one-by-one apply would give. A lone delivery (the usual case at low rates) takes
    the same prepared writes as a batch rather than the ORM's per-message reads. With
    ``CQRS_BATCH_SIZE`` 1 (or batch apply off) this is exactly
    :func:`dj_cqrs.consumer.handler.handle` per delivery.
    """
    items = [_body_and_key(d) for d in deliveries]
    if not items or one_by_one():
        return [handler.handle(body, key, sender=sender) for body, key in items]

    from dj_cqrs.observability import lag

    with lag.deferred():
        outcomes = _apply_many(items, sender)
    lag.record_batch(
        [o.payload for o in outcomes if o is not None and o.action is Action.ACK], sender=sender
    )
    return outcomes  # type: ignore[return-value]


def _apply_many(items: list[tuple[Any, str | None]], sender: Any) -> list[Outcome | None]:
    outcomes: list[Outcome | None] = [None] * len(items)
    solo: list[tuple[int, TransportPayload]] = []
    bulk: list[_Work] = []
    decode = handler.decode
    eligible: dict[Any, bool] = {}  # model -> bulk_eligible, once per batch
    for index, (body, routing_key) in enumerate(items):
        decoded = decode(body, routing_key, sender=sender)
        if isinstance(decoded, Outcome):
            outcomes[index] = decoded
            continue
        model = _bulk_model(decoded, eligible)
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
    return outcomes


def _bulk_model(payload: TransportPayload, eligible: dict[Any, bool]) -> Any:
    signal_type = payload.signal_type
    if signal_type not in (SignalType.SAVE, SignalType.SYNC, SignalType.DELETE):
        return None
    model = ReplicaRegistry.models.get(payload.cqrs_id)
    if model is None:
        return None
    allowed = eligible.get(model)
    if allowed is None:
        allowed = eligible[model] = bulk_eligible(model)
    if not allowed:
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
        rowlocks.release_ended(connections[alias])
        logger.debug('CQRS batch of %s messages falls back to one by one: %r', len(works), err)
        return [(w, handler.apply(w.payload, sender=sender)) for w in works]
    duration = time.monotonic() - started
    clock = _LagClock()
    return [(w, _settle(w, sender, duration, clock)) for w in works]


# Exact built-in field classes whose ``get_db_prep_save`` may return some values unchanged
# (checked per connection with a sample: on PostgreSQL integers are wrapped, for example).
_PASS_THROUGH_SAMPLES: dict[type, Any] = {
    models.IntegerField: 7,
    models.BigIntegerField: 7,
    models.SmallIntegerField: 7,
    models.PositiveIntegerField: 7,
    models.PositiveBigIntegerField: 7,
    models.PositiveSmallIntegerField: 7,
    models.AutoField: 7,
    models.BigAutoField: 7,
    models.SmallAutoField: 7,
    models.CharField: 'x',
    models.TextField: 'x',
    models.BooleanField: True,
}
# Exact built-in field classes whose conversion of a string depends on the string alone: the
# conversion is done once per distinct string in a batch (``cqrs_updated`` is often shared).
_MEMO_CLASSES = (
    models.DateTimeField,
    models.DateField,
    models.TimeField,
    models.DecimalField,
    models.UUIDField,
)
_INTEGER_FIELDS = frozenset(k for k, v in _PASS_THROUGH_SAMPLES.items() if type(v) is int)
_MISSING = object()


class _Column:
    __slots__ = ('field', 'attname', 'same_type', 'memo', 'prep')

    def __init__(self, field: Any, connection: Any) -> None:
        self.field = field
        self.attname = field.attname
        self.prep = field.get_db_prep_save
        self.same_type: type | None = None
        sample = _PASS_THROUGH_SAMPLES.get(type(field))
        if sample is not None:
            try:
                prepared = field.get_db_prep_save(sample, connection)
            except Exception:
                prepared = _MISSING
            if type(prepared) is type(sample) and prepared == sample:
                self.same_type = type(sample)
        self.memo = type(field) in _MEMO_CLASSES


def _has_db_default(field: Any) -> bool:
    """``Field.has_db_default()`` (Django 5.0+; before it, no field has a database default)."""
    has_db_default = getattr(field, 'has_db_default', None)
    return bool(has_db_default()) if has_db_default is not None else False


def _plain_column(field: Any) -> bool:
    """A column Django writes as ``get_db_prep_save(value)`` with a ``%s`` placeholder."""
    return (
        field.concrete
        and not getattr(field, 'generated', False)
        and not _has_db_default(field)
        and pre_save_is_plain(field, adding=True)
        and not hasattr(field, 'get_placeholder')
        and not hasattr(field, 'get_placeholder_sql')
    )


class _Table:
    """Prepared statements of one plain replica model on one connection (its bulk writes).

    Values are converted as Django's ``bulk_create``/``bulk_update`` convert them (each field's
    ``get_db_prep_save`` on the connection), minus the calls that cannot change a value, and
    written with one ``executemany`` per statement instead of compiling every value into SQL.
    """

    def __init__(self, model: Any, connection: Any) -> None:
        meta = model._meta
        quote = connection.ops.quote_name
        self.columns = [_Column(f, connection) for f in meta.concrete_fields]
        self.by_attname = {c.attname: c for c in self.columns}
        self.pk = self.by_attname[meta.pk.attname]
        self.table = quote(meta.db_table)
        self.quote = quote
        names = ', '.join(quote(c.field.column) for c in self.columns)
        marks = ', '.join(['%s'] * len(self.columns))
        self.insert_sql = f'INSERT INTO {self.table} ({names}) VALUES ({marks})'
        self.pk_column = quote(meta.pk.column)
        revision = meta.get_field('cqrs_revision')
        # Integer pk and revision come back from the driver as Python ints: read them raw.
        self.raw_read = type(meta.pk) in _INTEGER_FIELDS and type(revision) in _INTEGER_FIELDS
        self.revision_column = quote(revision.column)
        self._updates: dict[tuple[str, ...], str] = {}
        self._inserts: dict[int, str] = {}

    @staticmethod
    def build(model: Any, connection: Any) -> _Table | None:
        meta = model._meta
        if not all(_plain_column(f) for f in meta.fields):
            return None
        try:
            return _Table(model, connection)
        except Exception:  # anything unexpected: Django's bulk methods
            return None

    def select_sql(self, count: int, lock: bool) -> str:
        marks = ', '.join(['%s'] * count)
        sql = (
            f'SELECT {self.pk_column}, {self.revision_column} FROM {self.table} '
            f'WHERE {self.pk_column} IN ({marks})'
        )
        return f'{sql} FOR UPDATE' if lock else sql

    def prepare(self, column: _Column, value: Any, memo: dict[Any, Any], connection: Any) -> Any:
        if value is None or type(value) is column.same_type:
            return value
        if column.memo and type(value) is str:
            key = (column.attname, value)
            prepared = memo.get(key, _MISSING)
            if prepared is _MISSING:
                prepared = memo[key] = column.prep(value, connection)
            return prepared
        return column.prep(value, connection)

    def insert(self, connection: Any, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        by_attname = self.by_attname
        for values in rows:
            for name in values:
                if name not in by_attname:
                    raise _FallBack(f'{name} is not a column')
        memo: dict[Any, Any] = {}
        prepare = self.prepare
        params = []
        for values in rows:
            line = []
            for column in self.columns:
                value = values.get(column.attname, _MISSING)
                if value is _MISSING:
                    value = column.field.get_default()
                line.append(prepare(column, value, memo, connection))
            params.append(line)
        with connection.cursor() as cursor:
            if connection.vendor != 'postgresql':
                # SQLite (and MySQL's driver) run an executemany INSERT as one prepared
                # statement (or rewrite it into one): the cheapest way there.
                cursor.executemany(self.insert_sql, params)
                return
            # PostgreSQL: one multi-row INSERT per chunk (as bulk_create), not one per row.
            size = max(1, _PG_MAX_PARAMS // len(self.columns))
            for start in range(0, len(params), size):
                chunk = params[start : start + size]
                cursor.execute(self._multi_row_insert(len(chunk)), list(chain.from_iterable(chunk)))

    def _multi_row_insert(self, count: int) -> str:
        sql = self._inserts.get(count)
        if sql is None:
            row = '(' + ', '.join(['%s'] * len(self.columns)) + ')'
            head = self.insert_sql.partition(' VALUES ')[0]
            sql = self._inserts[count] = f'{head} VALUES {", ".join([row] * count)}'
        return sql

    def update(self, connection: Any, names: list[str], items: list[tuple[Any, dict]]) -> None:
        by_attname = self.by_attname
        columns = []
        for name in names:
            column = by_attname.get(name)
            if column is None:
                raise _FallBack(f'{name} is not a column')
            columns.append(column)
        key = tuple(names)
        sql = self._updates.get(key)
        if sql is None:
            sets = ', '.join(f'{self.quote(c.field.column)} = %s' for c in columns)
            sql = self._updates[key] = f'UPDATE {self.table} SET {sets} WHERE {self.pk_column} = %s'
        memo: dict[Any, Any] = {}
        prepare = self.prepare
        pk = self.pk
        params = []
        for pk_value, values in items:
            line = [prepare(c, values[c.attname], memo, connection) for c in columns]
            line.append(prepare(pk, pk_value, memo, connection))
            params.append(line)
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)


_tables: dict[tuple[type, str, str], _Table | None] = {}


def _table_for(model: Any, connection: Any) -> _Table | None:
    key = (model, connection.alias, connection.vendor)
    try:
        return _tables[key]
    except KeyError:
        table = _tables[key] = _Table.build(model, connection)
        return table


class _Row:
    """What the revision rules need of a row: its pk and its current revision."""

    __slots__ = ('pk', 'cqrs_revision')

    def __init__(self, pk: Any, cqrs_revision: Any) -> None:
        self.pk = pk
        self.cqrs_revision = cqrs_revision


def _write_model(alias: str, model: Any, works: list[_Work]) -> None:
    """Run the revision rules in memory for ``works`` (delivery order), then write in bulk."""
    manager = model.cqrs
    plan = plan_for(model)
    pk_name = plan.pk_name
    pk_field = model._meta.pk
    pk_attname = pk_field.attname
    to_python = pk_field.to_python

    staged: list[tuple[_Work, Any, dict[str, Any]]] = []
    for work in works:
        with _holding(work.records):
            mapped = manager._map_save_data(work.payload.instance_data)
        if mapped is None:
            continue
        staged.append((work, to_python(mapped[pk_name]), mapped))
    if not staged:
        return

    connection = connections[alias]
    table = _table_for(model, connection)
    rows = _read_rows(alias, model, table, {key for _, key, _ in staged})
    _drop_tombstoned(alias, model, staged, rows)

    # Final column values of the rows to insert / of the columns to update, by pk.
    created: dict[Any, dict[str, Any]] = {}
    updated: dict[Any, dict[str, Any]] = {}
    to_kwargs = plan.to_model_kwargs
    for work, key, mapped in staged:
        row = rows.get(key)
        kwargs = to_kwargs(mapped)
        if row is None:
            rows[key] = _Row(kwargs.get(pk_attname, mapped[pk_name]), kwargs.get('cqrs_revision'))
            created[key] = kwargs
            work.applied = True
            continue
        sync = work.payload.signal_type == SignalType.SYNC
        with _holding(work.records):
            # The replica manager's rules and log lines (held back until commit).
            allowed = manager._revision_allows(row, mapped['cqrs_revision'], sync)
        work.applied = True
        if not allowed:
            continue
        row.cqrs_revision = kwargs.get('cqrs_revision', row.cqrs_revision)
        values = created.get(key)
        if values is None:
            values = updated.get(key)
            if values is None:
                values = updated[key] = {}
        values.update(kwargs)

    pk_names = {pk_name, pk_attname}
    by_fields: dict[frozenset[str], list[tuple[Any, dict[str, Any]]]] = {}
    for key, values in updated.items():
        names = frozenset(values) - pk_names
        if names:
            by_fields.setdefault(names, []).append((rows[key].pk, values))
    if table is not None:
        table.insert(connection, created.values())
        for names, items in by_fields.items():
            table.update(connection, sorted(names), items)
        return
    default_manager = model._default_manager.using(alias)
    if created:
        default_manager.bulk_create([model(**kwargs) for kwargs in created.values()])
    for names, items in by_fields.items():
        objs = []
        for pk, values in items:
            obj = model(**{pk_attname: pk})
            for name, value in values.items():
                setattr(obj, name, value)
            objs.append(obj)
        default_manager.bulk_update(objs, sorted(names))


_CHUNK = 500  # values per IN (...) list: far below every backend's parameter limit
_PG_MAX_PARAMS = 30_000  # parameters per multi-row INSERT (the protocol's limit is 65,535)


def _read_rows(alias: str, model: Any, table: _Table | None, keys: set[Any]) -> dict[Any, _Row]:
    """pk and revision of the rows that exist (``FOR UPDATE`` where the database has it)."""
    connection = connections[alias]
    lock = connection.features.has_select_for_update
    if table is not None and table.raw_read:
        found: dict[Any, _Row] = {}
        memo: dict[Any, Any] = {}
        ordered = [table.prepare(table.pk, key, memo, connection) for key in keys]
        with connection.cursor() as cursor:
            for start in range(0, len(ordered), _CHUNK):
                chunk = ordered[start : start + _CHUNK]
                cursor.execute(table.select_sql(len(chunk), lock), chunk)
                for pk, revision in cursor.fetchall():
                    found[pk] = _Row(pk, revision)
        return found
    queryset = model._default_manager.using(alias).filter(pk__in=keys).order_by()
    if lock:
        queryset = queryset.select_for_update()
    return {pk: _Row(pk, rev) for pk, rev in queryset.values_list('pk', 'cqrs_revision')}


def _drop_tombstoned(alias: str, model: Any, staged: list[Any], rows: dict[Any, Any]) -> None:
    """Rows this replica deleted are never created in bulk: the group goes one by one.

    The row locks of :mod:`dj_cqrs.replica.tombstones` are taken first, so that
    a DELETE applied meanwhile by another worker cannot slip between this check and the insert.
    """
    from dj_cqrs.models import Tombstone
    from dj_cqrs.replica import tombstones

    absent = sorted({tombstones.pk_text(model, key) for _, key, _ in staged if key not in rows})
    if not absent:
        return
    _lock_rows(alias, model, absent)
    using = router.db_for_write(Tombstone)
    meta = Tombstone._meta
    connection = connections[using]
    quote = connection.ops.quote_name
    head = (
        f'SELECT 1 FROM {quote(meta.db_table)} '
        f'WHERE {quote(meta.get_field("cqrs_id").column)} = %s '
        f'AND {quote(meta.get_field("instance_pk").column)} IN '
    )
    with connection.cursor() as cursor:
        for start in range(0, len(absent), _CHUNK):
            chunk = absent[start : start + _CHUNK]
            marks = ', '.join(['%s'] * len(chunk))
            cursor.execute(f'{head}({marks}) LIMIT 1', [model.CQRS_ID, *chunk])
            if cursor.fetchone() is not None:
                raise _FallBack('tombstoned rows in batch')


def _lock_rows(alias: str, model: Any, pk_texts: list[str]) -> None:
    """The tombstone row locks of many rows, in key order (no deadlocks)."""
    rowlocks.lock(connections[alias], model.CQRS_ID, pk_texts)


def _settle(work: _Work, sender: Any, duration: float, clock: _LagClock) -> Outcome:
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
        signals.message_applied.send(
            sender, payload=payload, duration=duration, lag=clock.lag(payload)
        )
    return Outcome(Action.ACK, payload)


class _LagClock:
    """``handler.replication_lag`` for the messages of one committed group: one clock read, and
    each distinct ``cqrs_updated`` text parsed once (ISO 8601 fast path, else the handler's)."""

    __slots__ = ('now', 'moments')

    def __init__(self) -> None:
        self.now = timezone.now()
        self.moments: dict[str, Any] = {}

    def lag(self, payload: TransportPayload) -> float | None:
        updated = payload.instance_data.get('cqrs_updated')
        if not isinstance(updated, str):
            return handler.replication_lag(payload)
        moment = self.moments.get(updated)
        if moment is None:
            try:
                moment = datetime.datetime.fromisoformat(updated)
            except ValueError:
                moment = False
            if moment is not False and moment.tzinfo is None:
                moment = False
            self.moments[updated] = moment
        if moment is False:
            return handler.replication_lag(payload)
        return (self.now - moment).total_seconds()
