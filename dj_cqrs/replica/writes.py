"""The fast write engine: the revision rules run in memory for many rows, which are then read,
inserted and updated with prepared SQL.

Used by the batched apply and by ``cqrs_bulk_load`` for models on the default write path
(:mod:`dj_cqrs.replica.writepath`). Values are converted as Django's ``bulk_create`` and
``bulk_update`` convert them (each field's ``get_db_prep_save`` on the connection), minus the
calls that provably return the value unchanged, and written without compiling SQL per row:
INSERT by one prepared ``executemany`` (SQLite; mysqlclient turns it into multi-row INSERTs),
``COPY`` or multi-row INSERTs on PostgreSQL, one ``UPDATE ... WHERE pk = %s`` per column set.
Models with unusual columns (database defaults, generated columns, custom placeholders) go
through ``bulk_create``/``bulk_update``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from dj_cqrs.replica.manager import LogLines, revision_allows
from dj_cqrs.replica.plan import plan_for, pre_save_is_plain

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import ReplicaMixin

Row = dict[str, Any]
"""Column values of one row by attname (``parent_id``), as ``ReplicaPlan.to_model_kwargs``."""

IN_CHUNK = 900
"""Values per ``IN (...)`` list where the database limits parameters (SQLite: 999)."""
IN_CHUNK_UNLIMITED = 10_000
"""Values per ``IN (...)`` list elsewhere."""
PG_MAX_PARAMS = 30_000
"""Parameters per multi-row INSERT on PostgreSQL (the protocol's limit is 65,535)."""
COPY_MIN_ROWS = 64
"""Below this many rows a multi-row INSERT is as fast as ``COPY`` on PostgreSQL."""


class NotAColumn(Exception):
    """A value names no column of the table: only the one-by-one path knows what to do."""


def in_chunk(connection: BaseDatabaseWrapper) -> int:
    """Values per ``IN (...)`` list on this connection."""
    return IN_CHUNK if connection.features.max_query_params is not None else IN_CHUNK_UNLIMITED


# Exact built-in field classes whose ``get_db_prep_save`` may return a value of this type
# unchanged (checked per connection with the sample: PostgreSQL's driver wraps integers).
_IDENTITY_SAMPLES: dict[type[models.Field], object] = {
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
_INTEGER_CLASSES = frozenset(k for k, v in _IDENTITY_SAMPLES.items() if type(v) is int)
# Exact built-in field classes whose conversion of a text depends on the text alone: each
# distinct text is converted once per call (a batch often shares one ``cqrs_updated``).
_MEMO_CLASSES = (
    models.DateTimeField,
    models.DateField,
    models.TimeField,
    models.DecimalField,
    models.UUIDField,
)


class Column:
    """One column of a table and how its values are made ready for the driver."""

    __slots__ = ('field', 'attname', 'name', 'same_type', 'memo', 'prepare')

    def __init__(self, field: models.Field, connection: BaseDatabaseWrapper) -> None:
        self.field = field
        self.attname: str = field.attname
        self.name: str = connection.ops.quote_name(str(field.column))
        self.memo = type(field) in _MEMO_CLASSES
        self.same_type: type | None = None
        prep = field.get_db_prep_save
        self.prepare: Callable[[Any], Any] = lambda value: prep(value, connection)
        sample = _IDENTITY_SAMPLES.get(type(field))
        if sample is None:
            return
        try:
            prepared = field.get_db_prep_save(sample, connection)
        except Exception:  # noqa: BLE001 (no shortcut then: every value takes Django's path)
            return
        if type(prepared) is type(sample) and prepared == sample:
            self.same_type = type(sample)
        elif type(field) in _INTEGER_CLASSES:
            # get_prep_value is int() (itself for an int): only the backend's adaptation left.
            adapt = connection.ops.adapt_integerfield_value
            internal_type = field.get_internal_type()
            full = self.prepare

            def prepare_int(value: Any) -> Any:
                return adapt(value, internal_type) if type(value) is int else full(value)

            self.prepare = prepare_int

    def value(self, value: Any, memo: dict[tuple[str, str], Any]) -> Any:
        """``get_db_prep_save(value)``, skipped where it is the identity."""
        if value is None or type(value) is self.same_type:
            return value
        if self.memo and type(value) is str:
            key = (self.attname, value)
            if key not in memo:
                memo[key] = self.prepare(value)
            return memo[key]
        return self.prepare(value)


def _plain_column(field: models.Field) -> bool:
    """A column Django writes as ``get_db_prep_save(value)`` with a ``%s`` placeholder."""
    has_db_default = getattr(field, 'has_db_default', None)  # Django 5.0+
    return (
        field.concrete
        and not getattr(field, 'generated', False)
        and not (has_db_default is not None and has_db_default())
        and pre_save_is_plain(field, adding=True)
        and not hasattr(field, 'get_placeholder')
        and not hasattr(field, 'get_placeholder_sql')
    )


class Table:
    """The prepared statements of one replica model on one connection."""

    def __init__(self, model: type[models.Model], connection: BaseDatabaseWrapper) -> None:
        meta = model._meta
        quote = connection.ops.quote_name
        self.connection = connection
        self.columns = [Column(f, connection) for f in meta.concrete_fields]
        self.by_attname = {c.attname: c for c in self.columns}
        self.pk = self.by_attname[meta.pk.attname]
        self.table = quote(meta.db_table)
        revision = cast(models.Field, meta.get_field('cqrs_revision'))
        self.revision = quote(str(revision.column))
        # Integer pk and revision come back from every driver as ints: read them raw.
        self.raw_read = {type(meta.pk), type(revision)} <= _INTEGER_CLASSES
        names = ', '.join(c.name for c in self.columns)
        self.insert_head = f'INSERT INTO {self.table} ({names}) VALUES '
        self.copy_sql = f'COPY {self.table} ({names}) FROM STDIN'
        self.one_row = '(' + ', '.join(['%s'] * len(self.columns)) + ')'
        self._copy: bool | None = None
        self._updates: dict[tuple[str, ...], str] = {}

    def read_revisions(self, keys: Sequence[Any]) -> dict[Any, int]:
        """``{pk: cqrs_revision}`` of the rows of these pks that exist (raw SQL)."""
        found: dict[Any, int] = {}
        memo: dict[tuple[str, str], Any] = {}
        values = [self.pk.value(key, memo) for key in keys]
        size = in_chunk(self.connection)
        suffix = ' FOR UPDATE' if self.connection.features.has_select_for_update else ''
        with self.connection.cursor() as cursor:
            for start in range(0, len(values), size):
                chunk = values[start : start + size]
                marks = ', '.join(['%s'] * len(chunk))
                cursor.execute(
                    f'SELECT {self.pk.name}, {self.revision} FROM {self.table} '
                    f'WHERE {self.pk.name} IN ({marks}){suffix}',
                    chunk,
                )
                found.update(cursor.fetchall())
        return found

    def params(self, rows: Iterable[Row]) -> list[list[Any]]:
        """The INSERT values of these rows (missing columns take the field's default)."""
        memo: dict[tuple[str, str], Any] = {}
        columns = self.columns
        params = []
        for values in rows:
            if not self.by_attname.keys() >= values.keys():
                raise NotAColumn(sorted(set(values) - set(self.by_attname)))
            params.append(
                [
                    c.value(
                        values[c.attname] if c.attname in values else c.field.get_default(), memo
                    )
                    for c in columns
                ]
            )
        return params

    def insert(self, rows: Iterable[Row]) -> None:
        """INSERT these rows."""
        params = self.params(rows)
        if not params:
            return
        connection = self.connection
        with connection.cursor() as cursor:
            if connection.vendor != 'postgresql':
                cursor.executemany(self.insert_head + self.one_row, params)
            elif len(params) >= COPY_MIN_ROWS and self._copy_allowed(cursor):
                with cursor.cursor.copy(self.copy_sql) as copy:
                    for line in params:
                        copy.write_row(line)
            else:
                size = max(1, PG_MAX_PARAMS // len(self.columns))
                for start in range(0, len(params), size):
                    chunk = params[start : start + size]
                    sql = self.insert_head + ', '.join([self.one_row] * len(chunk))
                    cursor.execute(sql, list(chain.from_iterable(chunk)))

    def _copy_allowed(self, cursor: CursorWrapper) -> bool:
        """psycopg 3, and an ordinary table without rules (``COPY`` does not apply rules)."""
        if self._copy is None:
            self._copy = self.connection.vendor == 'postgresql' and hasattr(cursor.cursor, 'copy')
            if self._copy:
                cursor.execute(
                    'SELECT relkind, relhasrules FROM pg_class WHERE oid = %s::regclass',
                    [self.table],
                )
                found = cursor.fetchone()
                self._copy = found is not None and found[0] in ('r', 'p') and not found[1]
        return self._copy

    def update(self, names: Sequence[str], items: Iterable[tuple[Any, Row]]) -> None:
        """``UPDATE ... SET names WHERE pk = %s`` for each ``(pk, values)``."""
        columns = []
        for name in names:
            if name not in self.by_attname:
                raise NotAColumn(name)
            columns.append(self.by_attname[name])
        key = tuple(names)
        sql = self._updates.get(key)
        if sql is None:
            sets = ', '.join(f'{c.name} = %s' for c in columns)
            sql = self._updates[key] = f'UPDATE {self.table} SET {sets} WHERE {self.pk.name} = %s'
        memo: dict[tuple[str, str], Any] = {}
        params = [
            [*(c.value(values[c.attname], memo) for c in columns), self.pk.value(pk, memo)]
            for pk, values in items
        ]
        with self.connection.cursor() as cursor:
            cursor.executemany(sql, params)


_tables: dict[tuple[type, str, str], Table | None] = {}


def table_for(model: type[models.Model], connection: BaseDatabaseWrapper) -> Table | None:
    """The prepared statements of ``model`` (None: its columns need Django's bulk methods)."""
    key = (model, connection.alias, connection.vendor)
    if key not in _tables:
        fields = model._meta.concrete_fields
        _tables[key] = Table(model, connection) if all(map(_plain_column, fields)) else None
    return _tables[key]


def read_revisions(
    model: type[models.Model], connection: BaseDatabaseWrapper, keys: Sequence[Any]
) -> dict[Any, int]:
    """``{pk: cqrs_revision}`` of the existing rows of these pks, read ``FOR UPDATE`` where the
    database has it (Django ignores ``select_for_update()`` elsewhere)."""
    table = table_for(model, connection)
    if table is not None and table.raw_read:
        return table.read_revisions(keys)
    manager = model._default_manager.using(connection.alias)
    found: dict[Any, int] = {}
    size = in_chunk(connection)
    for start in range(0, len(keys), size):
        queryset = manager.filter(pk__in=keys[start : start + size]).order_by()
        found.update(queryset.select_for_update().values_list('pk', 'cqrs_revision'))
    return found


def insert(model: type[models.Model], connection: BaseDatabaseWrapper, rows: list[Row]) -> None:
    """INSERT new rows of ``model`` as ``bulk_create`` would."""
    table = table_for(model, connection)
    if table is not None:
        table.insert(rows)
    elif rows:
        model._default_manager.using(connection.alias).bulk_create([model(**r) for r in rows])


def update(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    names: Sequence[str],
    items: list[tuple[Any, Row]],
) -> None:
    """Set columns ``names`` of the rows ``(pk, values)`` as ``bulk_update`` would."""
    table = table_for(model, connection)
    if table is not None:
        table.update(names, items)
        return
    pk_attname = model._meta.pk.attname
    objs = []
    for pk, values in items:
        obj = model(**{pk_attname: pk})
        for name in names:
            setattr(obj, name, values[name])
        objs.append(obj)
    model._default_manager.using(connection.alias).bulk_update(objs, list(names))


@dataclasses.dataclass(slots=True)
class Change:
    """One SAVE/SYNC of a row (its mapped data), and what the rules made of it."""

    key: Any  # the pk as the pk field reads it (``to_python``)
    mapped: dict[str, Any]
    sync: bool = False
    lines: LogLines = dataclasses.field(
        default_factory=list
    )  # the rules' log lines, for the caller
    written: bool = False  # False: the rules refused it (older or duplicate revision)


def write_changes(
    model: type[ReplicaMixin],
    connection: BaseDatabaseWrapper,
    changes: Iterable[Change],
    revisions: dict[Any, int],
) -> None:
    """Run the revision rules for ``changes`` in order against ``{pk: cqrs_revision}`` of
    existing rows, then write what they allow: one INSERT, one UPDATE per column set.

    A row absent from ``revisions`` is created by its first change; later changes of the same
    row meet the revision that one left, as they would one by one.
    """
    cqrs_id = model.CQRS_ID
    plan = plan_for(model)
    current: dict[Any, Any] = dict(revisions)
    created: dict[Any, Row] = {}
    updated: dict[Any, Row] = {}
    for change in changes:
        kwargs = plan.to_model_kwargs(change.mapped)
        key = change.key
        if key not in current:
            current[key] = kwargs.get('cqrs_revision')
            created[key] = kwargs
            change.written = True
            continue
        new = change.mapped['cqrs_revision']
        # The manager's ``_revision_allows`` (models here do not override it: writepath).
        if not revision_allows(cqrs_id, key, current[key], new, change.sync, change.lines):
            continue
        change.written = True
        current[key] = kwargs.get('cqrs_revision', current[key])
        target = created[key] if key in created else updated.setdefault(key, {})
        target.update(kwargs)

    insert(model, connection, list(created.values()))
    by_names: dict[frozenset[str], list[tuple[Any, Row]]] = {}
    for key, values in updated.items():
        names = frozenset(values) - plan.pk_names
        if names:
            by_names.setdefault(names, []).append((key, values))
    for names, items in by_names.items():
        update(model, connection, sorted(names), items)
