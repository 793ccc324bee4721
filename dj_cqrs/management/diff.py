"""The diff pipelines: find rows a replica lacks, has stale or still has after a delete.

Stream format (the original's): a header line ``<cqrs_id>,<timestamp>[,<queue>]``, then one
JSON list per line. ``cqrs_diff_master`` writes ``[[pk, revision], ...]`` per batch,
``cqrs_diff_replica`` the pks to re-send, ``cqrs_deleted_diff_replica`` the replica's pks per
batch and ``cqrs_deleted_diff_master`` the pks the master no longer has. Any pk name works and
UUID pks travel as strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.core.management import CommandError
from django.db import DatabaseError, models
from django.utils import timezone

from dj_cqrs import wire
from dj_cqrs.constants import NO_QUEUE
from dj_cqrs.management.utils import chunked, json_pk, keyset_batches
from dj_cqrs.quoting import quote_for_log

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin

Write = Callable[[str], None]


def header(cqrs_id: str) -> str:
    """``'<cqrs_id>,<now>'``: the first line of a diff stream."""
    return f'{cqrs_id},{timezone.now()}'


@dataclass(frozen=True)
class StreamHeader:
    """The first line of a diff stream, split."""

    line: str
    cqrs_id: str
    queue: str | None

    @classmethod
    def parse(cls, line: str) -> StreamHeader:
        line = line.strip()
        fields = line.split(',')
        queue = fields[2].strip() if len(fields) >= 3 else None
        if queue in ('', NO_QUEUE):
            queue = None
        return cls(line=line, cqrs_id=fields[0].strip(), queue=queue)


def read_header(lines: Iterator[str]) -> StreamHeader:
    """The header of a stream (an empty stream has the empty CQRS_ID)."""
    return StreamHeader.parse(next(lines, ''))


def json_lines(lines: Iterable[str], first_number: int = 2) -> Iterator[list[Any]]:
    """The JSON lists of a stream after its header; blank lines are ignored.

    A line that is not a JSON list stops with ``"Diff line can't be parsed: line <n>!"``.
    """
    for number, text in enumerate(lines, start=first_number):
        if not text.strip():
            continue
        try:
            value = wire.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, list):
            raise CommandError(f"Diff line can't be parsed: line {number}!")
        yield value


def _uses_sync_filter(model: type[RawMasterMixin]) -> bool:
    from dj_cqrs.master.mixin import RawMasterMixin

    return getattr(model, 'is_sync_instance', None) is not RawMasterMixin.is_sync_instance


def master_revisions(
    model: type[RawMasterMixin], queryset: models.QuerySet[RawMasterMixin], batch_size: int
) -> Iterator[list[list[object]]]:
    """``[[pk, cqrs_revision], ...]`` per batch, for rows ``is_sync_instance()`` keeps."""
    if _uses_sync_filter(model):
        for batch in keyset_batches(queryset, batch_size):
            yield [[json_pk(row.pk), row.cqrs_revision] for row in batch if row.is_sync_instance()]
        return
    rows = queryset.values_list('pk', 'cqrs_revision')
    for pairs in keyset_batches(rows, batch_size, key=lambda row: row[0]):
        yield [[json_pk(pk), revision] for pk, revision in pairs]


def replica_pks(queryset: models.QuerySet[Any, Any], batch_size: int) -> Iterator[list[object]]:
    """The replica's pks per batch (``cqrs_deleted_diff_replica``)."""
    rows = queryset.values_list('pk', flat=True)
    for batch in keyset_batches(rows, batch_size, key=lambda pk: pk):
        yield [json_pk(pk) for pk in batch]


def _normalizer(model: type[models.Model]) -> Callable[[object], Any]:
    """The pk of a stream item as the model's pk field reads it; a value it cannot read (an
    object, a list, a fraction, text for an integer pk) stops with a one-line CommandError."""
    field = model._meta.pk

    def refuse(value: object) -> CommandError:
        shown = quote_for_log(wire.dumps(value), 100)
        kind = field.get_internal_type()
        name = model.__name__
        return CommandError(f'Bad pk in diff stream: {shown} is not a valid pk of {name} ({kind})!')

    def normalize(value: object) -> Any:
        if type(value) is not int and type(value) is not str:
            raise refuse(value)
        try:
            return field.to_python(value)
        except (ValidationError, ValueError, TypeError) as err:
            raise refuse(value) from err

    return normalize


def normalized_pks(model: type[models.Model], pks: list[object]) -> list[Any]:
    """``pks`` of a stream line as the model's pk field reads them (see ``_normalizer``)."""
    normalize = _normalizer(model)
    return [normalize(pk) for pk in pks]


def pks_to_resync(model: type[models.Model], pairs: list[object]) -> list[object]:
    """Master pks whose replica row is missing or has another revision (master order)."""
    normalize = _normalizer(model)
    wanted: dict[Any, tuple[object, object]] = {}
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise CommandError(f'Bad diff item: {wire.dumps(pair)}!')
        wanted[normalize(pair[0])] = (pair[0], pair[1])
    if not wanted:
        return []
    stored: dict[Any, object] = {}
    for keys in chunked(list(wanted)):
        stored.update(model._default_manager.filter(pk__in=keys).values_list('pk', 'cqrs_revision'))
    return [
        original
        for key, (original, revision) in wanted.items()
        if key not in stored or stored[key] != revision
    ]


def pks_missing(model: type[models.Model], pks: list[object]) -> list[object]:
    """The pks of ``pks`` that have no row in ``model`` (input order)."""
    normalize = _normalizer(model)
    keys = {normalize(pk): pk for pk in pks}
    if not keys:
        return []
    present: set[Any] = set()
    for part in chunked(list(keys)):
        present.update(model._default_manager.filter(pk__in=part).values_list('pk', flat=True))
    return [original for key, original in keys.items() if key not in present]


def set_repr(items: list[object]) -> str:
    """``{1, 3}`` as Python prints a set (the original's stderr line), in the given order."""
    return '{' + ', '.join(repr(item) for item in items) + '}'


def delete_pks(model: type[models.Model], pks: list[object], write_err: Write) -> int:
    """Plain queryset delete of these replica rows; a database error is printed, not raised."""
    if not pks:
        return 0
    pks = normalized_pks(model, pks)
    try:
        deleted = 0
        for part in chunked(pks):
            deleted += model._default_manager.filter(pk__in=part).delete()[0]
    except DatabaseError as err:
        write_err(f'{err}\n')
        return 0
    return deleted
