"""The replica manager's revision rules run in memory for many rows, then written in bulk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db.backends.base.base import BaseDatabaseWrapper

from dj_cqrs.replica import writes
from dj_cqrs.replica.plan import plan_for
from dj_cqrs.replica.revisions import LogLines

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import ReplicaMixin


@dataclass(slots=True)
class Change:
    """One SAVE/SYNC of a row (its mapped data), and what the rules made of it."""

    key: Any  # the pk as the pk field reads it (``to_python``)
    mapped: dict[str, Any]
    sync: bool = False
    lines: LogLines = field(default_factory=list)  # the rules' log lines, for the caller
    written: bool = False  # False: the rules refused it (older or duplicate revision)


class _Row:
    """What the revision rules read of a row: its pk and its current revision."""

    __slots__ = ('pk', 'cqrs_revision')

    def __init__(self, pk: Any, cqrs_revision: int | None) -> None:
        self.pk = pk
        self.cqrs_revision = cqrs_revision


@dataclass
class Writes:
    """The rows to insert and the columns to update, as the rules left them."""

    created: dict[Any, writes.Row] = field(default_factory=dict)
    updated: dict[frozenset[str], list[tuple[Any, writes.Row]]] = field(default_factory=dict)

    def run(self, model: type[ReplicaMixin], connection: BaseDatabaseWrapper) -> None:
        writes.insert(model, connection, list(self.created.values()))
        for names, items in self.updated.items():
            writes.update(model, connection, sorted(names), items)


def decide(
    model: type[ReplicaMixin], changes: Iterable[Change], revisions: dict[Any, int]
) -> Writes:
    """Run the rules for ``changes`` in order against ``{pk: cqrs_revision}`` of existing rows.

    A row absent from ``revisions`` is created by its first change; later changes of the same
    row meet the revision that one left, as they would one by one.
    """
    manager = model.cqrs
    plan = plan_for(model)
    rows = {pk: _Row(pk, revision) for pk, revision in revisions.items()}
    created: dict[Any, writes.Row] = {}
    updated: dict[Any, writes.Row] = {}
    for change in changes:
        kwargs = plan.to_model_kwargs(change.mapped)
        key = change.key
        row = rows.get(key)
        if row is None:
            rows[key] = _Row(key, kwargs.get('cqrs_revision'))
            created[key] = kwargs
            change.written = True
            continue
        new = change.mapped['cqrs_revision']
        if not manager._revision_allows(row, new, change.sync, change.lines):
            continue
        change.written = True
        row.cqrs_revision = kwargs.get('cqrs_revision', row.cqrs_revision)
        target = created[key] if key in created else updated.setdefault(key, {})
        target.update(kwargs)

    result = Writes(created)
    pk_names = {plan.pk_name, model._meta.pk.attname}
    for key, values in updated.items():
        names = frozenset(values) - pk_names
        if names:
            result.updated.setdefault(names, []).append((rows[key].pk, values))
    return result
