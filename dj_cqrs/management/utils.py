"""Batching helpers of the management commands.

``batch_qs`` keeps the original's name and signature, but pages by primary key (keyset
paging: ``ORDER BY pk`` and ``pk > last`` per batch) instead of OFFSET slices of an unordered
queryset, so no row is skipped or read twice and every batch costs the same on big tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.db import models

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin
    from dj_cqrs.replica.mixin import ReplicaMixin

DEFAULT_BATCH_SIZE = 10000

_T = TypeVar('_T')
_Row = TypeVar('_Row')
_QuerySet = TypeVar('_QuerySet', bound='models.QuerySet[Any, Any]')


def _instance_pk(row: models.Model) -> object:
    return row.pk


def keyset_batches(
    queryset: models.QuerySet[Any, _Row],
    batch_size: int = DEFAULT_BATCH_SIZE,
    key: Callable[[Any], object] = _instance_pk,
) -> Iterator[list[_Row]]:
    """Yield the rows of ``queryset`` in pk order, ``batch_size`` at a time, as lists.

    ``key`` reads the pk of a row (default ``row.pk``; for ``values_list('pk', ...)`` pass
    ``lambda row: row[0]``). Each batch is one query; memory holds one batch only.
    """
    if batch_size <= 0:
        raise ValueError(f'batch_size must be positive, got {batch_size!r}')
    ordered = queryset.order_by('pk')
    page = ordered
    while True:
        rows = list(page[:batch_size])
        if not rows:
            return
        yield rows
        if len(rows) < batch_size:
            return
        page = ordered.filter(pk__gt=key(rows[-1]))


def batch_qs(
    queryset: models.QuerySet[Any, _Row], batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[list[_Row]]:
    """The original's helper: yield the rows of ``queryset`` in batches (stable, by pk)."""
    yield from keyset_batches(queryset, batch_size)


def master_model(cqrs_id: str) -> type[RawMasterMixin]:
    """The master model of ``cqrs_id`` or ``CommandError('Wrong CQRS ID: <id>!')``."""
    from django.core.management import CommandError

    from dj_cqrs.registries import MasterRegistry

    model = MasterRegistry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        raise CommandError(f'Wrong CQRS ID: {cqrs_id}!')
    return model


def replica_model(cqrs_id: str) -> type[ReplicaMixin]:
    """The replica model of ``cqrs_id`` or ``CommandError('Wrong CQRS ID: <id>!')``."""
    from django.core.management import CommandError

    from dj_cqrs.registries import ReplicaRegistry

    model = ReplicaRegistry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        raise CommandError(f'Wrong CQRS ID: {cqrs_id}!')
    # The commands read its table: a model-less replica fails at the first query, as it did
    # in the original.
    return cast('type[ReplicaMixin]', model)


def filtered_queryset(queryset: _QuerySet, filter_text: str | None) -> _QuerySet:
    """``queryset.filter(**json)`` for a ``--filter`` value, with the original's errors.

    Not JSON or not an object: ``'Bad filter kwargs!'``; a field or value the query cannot
    use: ``'Bad filter kwargs! <Django's message>'``. The filter is checked here, at once.
    """
    import json

    from django.core.exceptions import FieldError, ValidationError
    from django.core.management import CommandError

    try:
        kwargs = json.loads(filter_text) if filter_text is not None else {}
    except ValueError:
        raise CommandError('Bad filter kwargs!')
    if not isinstance(kwargs, dict):
        raise CommandError('Bad filter kwargs!')
    try:
        filtered = queryset.filter(**kwargs)
        filtered.exists()
    except (FieldError, ValidationError, ValueError, TypeError) as err:
        message = '; '.join(err.messages) if isinstance(err, ValidationError) else str(err)
        raise CommandError(f'Bad filter kwargs! {message}')
    return filtered


def json_pk(value: object) -> int | str | None:
    """A pk as JSON can carry it: ints and strings as they are, UUIDs and others as text."""
    if value is None or isinstance(value, (int, str)):
        return value
    return str(value)


def input_lines(options: dict[str, Any]) -> Iterator[str]:
    """Lines of the command's stdin (``call_command(..., stdin=stream)`` or ``sys.stdin``)."""
    import sys

    stream = options.get('stdin') or sys.stdin
    return iter(stream)


def positive_int(text: str) -> int:
    """argparse type of ``--batch``: a whole number above zero."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid int value: {text!r}')
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be a positive number, got {value}')
    return value


def boolean(text: str | bool) -> bool:
    """argparse type of ``--clear``: a real boolean (``false``/``0``/``no`` mean False)."""
    import argparse

    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in ('1', 'true', 't', 'yes', 'y', 'on'):
        return True
    if lowered in ('0', 'false', 'f', 'no', 'n', 'off', ''):
        return False
    raise argparse.ArgumentTypeError(f'not a boolean: {text!r}')


IN_CHUNK = 900
"""Values per ``pk__in`` query: under the 999 parameters of older SQLite builds."""


def chunked(values: list[_T], size: int = IN_CHUNK) -> Iterator[list[_T]]:
    """``values`` in slices of ``size`` (for ``pk__in`` lookups of a whole batch)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
