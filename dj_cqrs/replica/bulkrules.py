"""The original's revision rules: whether a message's revision may replace a row's (and the lines
they log), also run in memory for many rows, then written in bulk."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db.backends.base.base import BaseDatabaseWrapper

from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.replica import writes
from dj_cqrs.replica.plan import plan_for

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import ReplicaMixin

logger = logging.getLogger(LOGGER_NAME)

LogLines = list[tuple[int, str, tuple[object, ...]]]
"""Log lines kept for later: ``(level, message, args)`` each."""


def log(lines: LogLines | None, level: int, message: str, *args: object) -> None:
    """Log a line now (``lines`` None) or keep it in ``lines``."""
    if lines is None:
        logger.log(level, message, *args, stacklevel=2)
    else:
        lines.append((level, message, args))


def revision_allows(
    cqrs_id: str | None, pk: Any, existing: int, new: int, sync: bool, lines: LogLines | None
) -> bool:
    """Whether revision ``new`` of a SAVE (``sync``: of a SYNC) may replace ``existing``."""
    if sync:
        if existing > new:
            log(
                lines,
                logging.WARNING,
                'CQRS revision downgrade on sync: pk = %s, '
                'cqrs_revision = new %s / existing %s (%s).',
                pk,
                new,
                existing,
                cqrs_id,
            )
    else:
        if existing > new:
            log(
                lines,
                logging.ERROR,
                'Wrong CQRS sync order: pk = %s, cqrs_revision = new %s / existing %s (%s).',
                pk,
                new,
                existing,
                cqrs_id,
            )
            return False
        if existing == new:
            log(
                lines,
                logging.ERROR,
                'Received duplicate CQRS data: pk = %s, cqrs_revision = %s (%s).',
                pk,
                new,
                cqrs_id,
            )
            if new == 0:
                log(
                    lines,
                    logging.WARNING,
                    'CQRS potential creation race condition: pk = %s (%s).',
                    pk,
                    cqrs_id,
                )
            return False
        if new != existing + 1:
            log(
                lines,
                logging.WARNING,
                'Lost or filtered out %s CQRS packages: pk = %s, cqrs_revision = %s (%s)',
                new - existing - 1,
                pk,
                new,
                cqrs_id,
            )
    return True


@dataclass(slots=True)
class Change:
    """One SAVE/SYNC of a row (its mapped data), and what the rules made of it."""

    key: Any  # the pk as the pk field reads it (``to_python``)
    mapped: dict[str, Any]
    sync: bool = False
    lines: LogLines = field(default_factory=list)  # the rules' log lines, for the caller
    written: bool = False  # False: the rules refused it (older or duplicate revision)


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
    cqrs_id = model.CQRS_ID
    plan = plan_for(model)
    current: dict[Any, Any] = dict(revisions)
    created: dict[Any, writes.Row] = {}
    updated: dict[Any, writes.Row] = {}
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

    result = Writes(created)
    for key, values in updated.items():
        names = frozenset(values) - plan.pk_names
        if names:
            result.updated.setdefault(names, []).append((key, values))
    return result
