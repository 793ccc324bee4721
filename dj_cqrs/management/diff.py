"""The diff pipelines: find rows a replica lacks, has stale or still has after a delete.

Stream format (the original's): a header line ``<cqrs_id>,<timestamp>[,<queue>]``, then one
JSON list per line. ``cqrs_diff_master`` writes ``[[pk, revision], ...]`` per batch,
``cqrs_diff_replica`` the pks to re-send, ``cqrs_deleted_diff_replica`` the replica's pks per
batch and ``cqrs_deleted_diff_master`` the pks the master no longer has. Any pk name works and
UUID pks travel as strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.core.management import CommandError
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, models
from django.utils import timezone

from dj_cqrs import wire
from dj_cqrs.constants import NO_QUEUE
from dj_cqrs.management.utils import (
    Write,
    add_batch_argument,
    chunked,
    filtered_queryset,
    input_lines,
    json_pk,
    keyset_batches,
)
from dj_cqrs.quoting import quote_for_log

_Model = TypeVar('_Model')


class SourceCommand(BaseCommand):
    """Step 1 of a pipeline: the header, then one JSON list per batch of the filtered rows."""

    side: str
    find_model: Callable[[str], type[models.Model]]
    batches: Callable[[models.QuerySet[Any], int], Iterator[list[object]]]

    def add_arguments(self, parser: CommandParser) -> None:
        help_text = f'CQRS_ID of the {self.side} model'
        parser.add_argument('--cqrs-id', '-cid', required=True, help=help_text)
        parser.add_argument('--filter', '-f', default=None, help='JSON object of filter kwargs')
        add_batch_argument(parser)

    def handle(self, *args: object, **options: Any) -> None:
        model = self.find_model(options['cqrs_id'])
        queryset = filtered_queryset(model._default_manager.all(), options['filter'])
        if not queryset.exists():
            self.stderr.write('No objects found for filter!')
            return
        self.stdout.write(f'{model.CQRS_ID},{timezone.now()}')  # type: ignore[attr-defined]
        for items in self.batches(queryset, options['batch']):
            self.stdout.write(wire.dumps(items))


def read_stream(
    options: dict[str, Any], find_model: Callable[[str], _Model]
) -> tuple[str, str | None, _Model, Iterator[list[Any]]]:
    """The stream on stdin: its header line, the queue the header names (None: all), the
    model of its CQRS_ID (an empty stream has the empty CQRS_ID) and the stream's JSON lists."""
    lines = input_lines(options)
    line = next(lines, '').strip()
    fields = line.split(',')
    queue = fields[2].strip() if len(fields) >= 3 else None
    queue = None if queue in ('', NO_QUEUE) else queue
    return line, queue, find_model(fields[0].strip()), json_lines(lines)


def json_lines(lines: Iterable[str]) -> Iterator[list[Any]]:
    """The JSON lists of a stream after its header; blank lines are ignored."""
    for number, text in enumerate(lines, start=2):  # the header is line 1
        if not text.strip():
            continue
        try:
            value = wire.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, list):
            raise CommandError(f"Diff line can't be parsed: line {number}!")
        yield value


def master_revisions(queryset: models.QuerySet[Any], batch_size: int) -> Iterator[list[object]]:
    """``[[pk, cqrs_revision], ...]`` per batch, for rows ``is_sync_instance()`` keeps."""
    from dj_cqrs.master.mixin import RawMasterMixin

    if queryset.model.is_sync_instance is not RawMasterMixin.is_sync_instance:
        for batch in keyset_batches(queryset, batch_size):
            yield [[json_pk(row.pk), row.cqrs_revision] for row in batch if row.is_sync_instance()]
        return
    rows = queryset.values_list('pk', 'cqrs_revision')
    for pairs in keyset_batches(rows, batch_size, key=lambda row: row[0]):
        yield [[json_pk(pk), revision] for pk, revision in pairs]


def replica_pks(queryset: models.QuerySet[Any], batch_size: int) -> Iterator[list[object]]:
    """The replica's pks per batch (``cqrs_deleted_diff_replica``)."""
    rows = queryset.values_list('pk', flat=True)
    for batch in keyset_batches(rows, batch_size, key=lambda pk: pk):
        yield [json_pk(pk) for pk in batch]


def _normalized(model: type[models.Model], value: object) -> Any:
    """A pk of a stream item as the model's pk field reads it; a value it cannot read (an
    object, a list, a fraction, text for an integer pk) stops with a one-line CommandError."""
    field = model._meta.pk
    try:
        if type(value) is not int and type(value) is not str:
            raise TypeError(f'a pk is a number or a string, not {type(value).__name__}')
        return field.to_python(value)
    except (ValidationError, ValueError, TypeError) as err:
        shown = quote_for_log(wire.dumps(value), 100)
        kind = field.get_internal_type()
        name = model.__name__
        message = f'Bad pk in diff stream: {shown} is not a valid pk of {name} ({kind})!'
        raise CommandError(message) from err


def normalized_pks(model: type[models.Model], pks: list[object]) -> list[Any]:
    """``pks`` of a stream line as the model's pk field reads them (see ``_normalized``)."""
    return [_normalized(model, pk) for pk in pks]


def pks_to_resync(model: type[models.Model], pairs: list[object]) -> list[object]:
    """Master pks whose replica row is missing or has another revision (master order)."""
    wanted: dict[Any, tuple[object, object]] = {}
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise CommandError(f'Bad diff item: {wire.dumps(pair)}!')
        wanted[_normalized(model, pair[0])] = (pair[0], pair[1])
    stored = _revisions(model, list(wanted))
    return [
        original
        for key, (original, revision) in wanted.items()
        if key not in stored or stored[key] != revision
    ]


def pks_missing(model: type[models.Model], pks: list[object]) -> list[object]:
    """The pks of ``pks`` that have no row in ``model`` (input order)."""
    keys = dict(zip(normalized_pks(model, pks), pks, strict=True))
    present = _revisions(model, list(keys))
    return [original for key, original in keys.items() if key not in present]


def _revisions(model: type[models.Model], keys: list[Any]) -> dict[Any, object]:
    """``{pk: cqrs_revision}`` of the rows with these pks, ``IN_CHUNK`` pks per query."""
    stored: dict[Any, object] = {}
    for part in chunked(keys):
        stored.update(model._default_manager.filter(pk__in=part).values_list('pk', 'cqrs_revision'))
    return stored


def delete_pks(model: type[models.Model], pks: list[object], write_err: Write) -> None:
    """Plain queryset delete of these replica rows; a database error is printed, not raised."""
    try:
        for part in chunked(normalized_pks(model, pks)):
            model._default_manager.filter(pk__in=part).delete()
    except DatabaseError as err:
        write_err(f'{err}\n')
