"""``cqrs_bulk_load``: the lines of a dump applied to a replica model under the revision rules.

Each batch of lines is one transaction. Models on the default write path
(:mod:`dj_cqrs.replica.writepath`) are written by the fast write engine
(:mod:`dj_cqrs.replica.writes`), the same as the batched apply: one read of the existing pks and
revisions (none when the batch's pk range is empty in the table), one tombstone lookup, the
revision rules in memory, one INSERT (``COPY`` on PostgreSQL) and one UPDATE per column set.
Other models go line by line through ``cqrs_save``. Every line that fails is reported with its
number on ``write_err`` and rolled back alone; the other lines of the batch are kept.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from django.db import DEFAULT_DB_ALIAS, connections, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from dj_cqrs import wire
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.dataclasses import instance_data_problem
from dj_cqrs.exceptions import UnusablePayloadError
from dj_cqrs.management.utils import Write
from dj_cqrs.replica import tombstones, writes
from dj_cqrs.replica.plan import plan_for
from dj_cqrs.replica.writepath import default_write_path

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import RawReplicaMixin, ReplicaMixin

logger = logging.getLogger(LOGGER_NAME)


@dataclass
class LoadResult:
    """True counts of a load: every line is applied, skipped or failed (with its number)."""

    applied: int = 0
    skipped: int = 0
    failed: list[int] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        """Lines the replica accepted: applied, or already as new (revision rules)."""
        return self.applied + self.skipped


def clear(model: type[models.Model]) -> None:
    """Delete every row of the replica ``model`` in one transaction (raises DatabaseError)."""
    manager = getattr(model, '_default_manager', None)
    if manager is None:
        return
    with transaction.atomic(using=router.db_for_write(model)):
        manager.all().delete()


@dataclass
class _Line:
    number: int
    data: dict[str, Any]


_UNSAVED = "Instance can't be saved"


@dataclass
class _Run:
    """One load: the replica model, its counts and where a failed line is reported."""

    model: Any
    write_err: Write
    result: LoadResult = field(default_factory=LoadResult)

    def fail(self, number: int, what: str, detail: str | None = None) -> None:
        """Report line ``number`` (``<what>: line <n>![ <detail>]``) and count it as failed."""
        self.write_err(f'{what}: line {number}!' + ('' if detail is None else f' {detail}') + '\n')
        self.result.failed.append(number)


class _Rollback(Exception):
    """Undo the savepoint of one line whose apply reported failure."""


def load(
    model: type[RawReplicaMixin],
    lines: Iterable[str],
    *,
    batch_size: int = 10000,
    write_err: Write,
) -> LoadResult:
    """Apply dump lines (after the CQRS_ID line) to the replica ``model``.

    Lines go through the replica's revision rules: older or duplicate revisions are skipped
    with the usual log lines and counted as skipped.
    """
    run = _Run(model, write_err)
    # The objects alive before the load (Django, the models, the settings) are moved out of the
    # collector's sight: every full collection during the load would scan them again.
    gc.freeze()
    try:
        for batch in _parsed_batches(lines, batch_size, run):
            with transaction.atomic(using=_alias(model)):
                if default_write_path(model):
                    _apply_bulk(run, batch)
                else:
                    for line in batch:
                        _apply_one(run, line)
    finally:
        gc.unfreeze()
    return run.result


def _parsed_batches(lines: Iterable[str], batch_size: int, run: _Run) -> Iterator[list[_Line]]:
    batch: list[_Line] = []
    max_depth = get_settings().replica.max_message_depth
    for number, text in enumerate(lines, start=2):  # the CQRS_ID is line 1
        try:
            # The consumer's decode and limits: a hostile line is refused, not a crash.
            data = wire.decode_body(text, max_depth=max_depth)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            run.fail(number, "Dump file can't be parsed")
            continue
        problem = instance_data_problem(data)
        if problem is not None:
            run.fail(number, _UNSAVED, problem)
            continue
        batch.append(_Line(number, data))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _alias(model: type[RawReplicaMixin]) -> str | None:
    if not hasattr(model, '_meta'):
        return None  # a model-less replica: cqrs_save writes where it wants
    return router.db_for_write(cast('type[models.Model]', model))


_Changes = list[tuple[_Line, writes.Change]]


def _apply_bulk(run: _Run, batch: list[_Line]) -> None:
    model: type[ReplicaMixin] = run.model
    pk_name = plan_for(model).pk_name
    to_python = model._meta.pk.to_python
    changes: _Changes = []
    seen: set[Any] = set()
    later: list[_Line] = []
    for line in batch:
        try:
            mapped = model.cqrs._map_save_data(line.data)
        except UnusablePayloadError as err:
            run.fail(line.number, _UNSAVED, str(err))
            continue
        if mapped is None:
            run.fail(line.number, _UNSAVED)
            continue
        try:
            key = to_python(mapped[pk_name])
        except Exception:  # noqa: BLE001 (cqrs_save reports it, with its line number)
            later.append(line)
            continue
        if key in seen:
            # The same row twice in one batch: apply the later line after the earlier one.
            later.append(line)
            continue
        seen.add(key)
        changes.append((line, writes.Change(key, mapped)))

    alias = _alias(model) or DEFAULT_DB_ALIAS
    connection = connections[alias]
    keys = [change.key for _, change in changes]
    revisions: dict[Any, int] = {}
    if keys and _any_in_range(model, alias, keys):
        revisions = writes.read_revisions(model, connection, keys)
    creates = [(line, change) for line, change in changes if change.key not in revisions]
    if creates:
        # No tombstone row locks here (the batched apply takes them): a load batch of 10,000
        # new rows would need 10,000 advisory locks, beyond PostgreSQL's shared lock table.
        absent = [change.key for _, change in creates]
        stones = tombstones.tombstoned(model, absent, alias)
        if stones:
            # The replica deleted these rows: the manager decides whether a line may recreate one.
            dead = [tombstones.pk_text(model, change.key) in stones for _, change in creates]
            later[:0] = [line for (line, _), gone in zip(creates, dead, strict=True) if gone]
            creates = [pair for pair, gone in zip(creates, dead, strict=True) if not gone]
    updates = [(line, change) for line, change in changes if change.key in revisions]
    _update_many(run, connection, updates, revisions)
    _create_many(run, connection, creates)
    for line in later:
        _apply_one(run, line)


def _update_many(
    run: _Run, connection: BaseDatabaseWrapper, updates: _Changes, revisions: dict[Any, int]
) -> None:
    """The rules for rows that exist, then their UPDATEs; if the database refuses one, every
    line of them once more through ``cqrs_save`` (which reports the bad one)."""
    if not updates:
        return
    try:
        with transaction.atomic(using=connection.alias):
            writes.write_changes(run.model, connection, [c for _, c in updates], revisions)
    except Exception:  # noqa: BLE001 (each line alone finds and reports the bad one)
        for line, _ in updates:
            _apply_one(run, line)
        return
    for _, change in updates:
        for level, message, args in change.lines:
            logger.log(level, message, *args)
        if change.written:
            run.result.applied += 1
        else:
            run.result.skipped += 1


def _any_in_range(model: type[ReplicaMixin], alias: str, keys: list[Any]) -> bool:
    """Whether the table may hold any of ``keys``: for integer pks, one look at the range of
    the batch (a dump is in pk order, so a first load finds none); else, whether it has rows."""
    manager = model._default_manager.using(alias)
    if isinstance(model._meta.pk, models.IntegerField) and all(type(key) is int for key in keys):
        return bool(manager.filter(pk__gte=min(keys), pk__lte=max(keys)).exists())
    return bool(manager.exists())


def _apply_one(run: _Run, line: _Line) -> None:
    """``cqrs_save`` of one line in its own savepoint."""
    alias = _alias(run.model)
    try:
        with transaction.atomic(using=alias):
            saved = run.model.cqrs_save(line.data)
            if not saved or transaction.get_rollback(using=alias):
                raise _Rollback
    except (_Rollback, UnusablePayloadError) as err:
        run.fail(line.number, _UNSAVED, str(err) or None)  # (a _Rollback has no text)
    except Exception as err:
        run.fail(line.number, 'Unexpected error', str(err))
    else:
        # cqrs_save does not say whether it skipped an old revision: counted as applied.
        run.result.applied += 1


def _create_many(run: _Run, connection: BaseDatabaseWrapper, creates: _Changes) -> None:
    """INSERT the new rows at once; if that fails, halves are tried until the bad lines are
    alone, and those go through ``cqrs_save`` (which reports them): one bad line in a batch
    of 10,000 costs a few retries, not 10,000 single-row saves."""
    to_kwargs = plan_for(run.model).to_model_kwargs
    pending = [creates] if creates else []
    while pending:
        part = pending.pop()
        try:
            rows = [to_kwargs(change.mapped) for _, change in part]
            with transaction.atomic(using=connection.alias):
                writes.insert(run.model, connection, rows)
        except Exception:  # noqa: BLE001 (halves, then lines alone, find the bad ones)
            if len(part) <= _ROW_BY_ROW:
                for line, _ in part:
                    _apply_one(run, line)
            else:
                middle = len(part) // 2
                pending += [part[middle:], part[:middle]]  # the first half is tried first
            continue
        run.result.applied += len(part)


_ROW_BY_ROW = 16
"""A failing part of at most this many lines is applied line by line."""
