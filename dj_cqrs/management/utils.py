"""Helpers of the management commands: keyset batches, model lookup, argument types.

``batch_qs`` (the original's name) pages by primary key (``ORDER BY pk`` and ``pk > last`` per
batch) instead of OFFSET slices, so no row is skipped or read twice.
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentTypeError
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.core.exceptions import FieldError, ValidationError
from django.core.management import CommandError
from django.db import models

from dj_cqrs.registries import MasterRegistry, ReplicaRegistry

if TYPE_CHECKING:
    from django.core.management.base import OutputWrapper

    from dj_cqrs.master.mixin import RawMasterMixin
    from dj_cqrs.replica.mixin import ReplicaMixin

DEFAULT_BATCH_SIZE = 10000

Write = Callable[[str], None]

_T = TypeVar('_T')
_Row = TypeVar('_Row')
_Number = TypeVar('_Number', int, float)
_QuerySet = TypeVar('_QuerySet', bound='models.QuerySet[Any, Any]')


def keyset_batches(
    queryset: models.QuerySet[Any, _Row],
    batch_size: int = DEFAULT_BATCH_SIZE,
    key: Callable[[Any], object] = attrgetter('pk'),
) -> Iterator[list[_Row]]:
    """Yield the rows of ``queryset`` in pk order, ``batch_size`` at a time, as lists;
    ``key`` reads the pk of a row (of a ``values_list('pk', ...)`` row: ``row[0]``)."""
    if batch_size <= 0:
        raise ValueError(f'batch_size must be positive, got {batch_size!r}')
    ordered = queryset.order_by('pk')
    page = ordered
    while rows := list(page[:batch_size]):
        yield rows
        if len(rows) < batch_size:
            return
        page = ordered.filter(pk__gt=key(rows[-1]))


batch_qs = keyset_batches  # the original's name


def master_model(cqrs_id: str) -> type[RawMasterMixin]:
    """The master model of ``cqrs_id`` or ``CommandError('Wrong CQRS ID: <id>!')``."""
    return _registered(MasterRegistry, cqrs_id)


def replica_model(cqrs_id: str) -> type[ReplicaMixin]:
    """The replica model of ``cqrs_id`` or ``CommandError('Wrong CQRS ID: <id>!')``."""
    # The commands read its table: a model-less replica fails at the first query, as it did
    # in the original.
    return cast('type[ReplicaMixin]', _registered(ReplicaRegistry, cqrs_id))


def _registered(registry: Any, cqrs_id: str) -> Any:
    model = registry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        raise CommandError(f'Wrong CQRS ID: {cqrs_id}!')
    return model


def filtered_queryset(queryset: _QuerySet, filter_text: str | None) -> _QuerySet:
    """``queryset.filter(**json)`` for a ``--filter`` value, checked at once (the original's
    errors, with Django's reason when the query cannot use the filter)."""
    try:
        kwargs = json.loads(filter_text) if filter_text is not None else {}
    except ValueError:
        kwargs = None
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
    return iter(options.get('stdin') or sys.stdin)


def raw_writer(stream: OutputWrapper) -> Write:
    """``stream.write(text)`` with no newline added, flushed (progress lines, dump text)."""

    def write(text: str) -> None:
        stream.write(text, ending='')
        stream.flush()

    return write


def add_batch_argument(parser: Any) -> None:
    parser.add_argument(
        '--batch', '-b', type=positive_int, default=DEFAULT_BATCH_SIZE, help='Batch size'
    )


def positive_int(text: str) -> int:
    """argparse type of ``--batch``: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise ArgumentTypeError(f'invalid int value: {text!r}')
    if value <= 0:
        raise ArgumentTypeError(f'must be a positive number, got {value}')
    return value


def number(kind: type[_Number], *, zero: bool) -> Callable[[str], _Number]:
    """argparse type: a ``kind`` number above zero (``zero=True``: or zero)."""

    def parse(text: str) -> _Number:
        try:
            value = kind(text)
        except ValueError:
            raise ArgumentTypeError(f'{text!r} is not a number') from None
        if value < 0 or (value == 0 and not zero):
            raise ArgumentTypeError(f'{text!r} must be {">=" if zero else ">"} 0')
        return value

    return parse


def boolean(text: str | bool) -> bool:
    """argparse type of ``--clear``: a real boolean (``false``/``0``/``no`` mean False)."""
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in ('1', 'true', 't', 'yes', 'y', 'on'):
        return True
    if lowered in ('0', 'false', 'f', 'no', 'n', 'off', ''):
        return False
    raise ArgumentTypeError(f'not a boolean: {text!r}')


IN_CHUNK = 900
"""Values per ``pk__in`` query: under the 999 parameters of older SQLite builds."""


def chunked(values: list[_T], size: int = IN_CHUNK) -> Iterator[list[_T]]:
    """``values`` in slices of ``size`` (for ``pk__in`` lookups of a whole batch)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
