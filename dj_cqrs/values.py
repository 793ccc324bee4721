"""Python values to JSON-ready values and back, exactly.

A Decimal stays a JSON number with all its digits (``12.30``), which django-cqrs 3.1 reads too.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.utils.dateparse import parse_datetime
from django.utils.duration import duration_iso_string


class JsonNumber(float):
    """A float decoded from the wire that remembers its exact text (for DecimalFields)."""

    __slots__ = ('text',)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number

    def as_decimal(self) -> decimal.Decimal:
        return decimal.Decimal(self.text)


class ExactDecimal:
    """Wraps a Decimal so that ujson writes its text as a JSON number."""

    __slots__ = ('text',)

    def __init__(self, value: decimal.Decimal) -> None:
        self.text = str(value)

    def __json__(self) -> str:
        return self.text


def get_json_valid_value(value: Any) -> Any:
    """A JSON-ready form of one field value (dates, times, UUIDs, durations, bytes to text)."""
    if value is None or isinstance(value, (str, int, float, bool, dict, list)):
        return value
    if isinstance(value, (datetime.date, datetime.time, uuid.UUID)):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode('ascii')
    return value


def wire_default(value: Any) -> Any:
    """ujson ``default=``: values a serializer or hook left as Python objects."""
    if isinstance(value, decimal.Decimal):
        return ExactDecimal(value) if value.is_finite() else str(value)
    converted = get_json_valid_value(value)
    if converted is value:
        raise TypeError(f'{value!r} of type {type(value).__name__} is not JSON serializable')
    return converted


class WireReady(dict):
    """A dict already as :func:`exact_numbers` makes it: returned as it is, not copied again."""

    __slots__ = ()


def exact_decimal(value: Any) -> Any:
    """:func:`exact_numbers` of one value of a DecimalField (None, a Decimal or anything else)."""
    if value is None:
        return None
    if type(value) is decimal.Decimal:
        return ExactDecimal(value) if value.is_finite() else str(value)
    return exact_numbers(value)


def exact_numbers(value: Any) -> Any:
    """A copy of ``value`` where each Decimal is wrapped to keep all its digits on the wire."""
    if type(value) is WireReady:
        return value
    if isinstance(value, dict):
        return {k: exact_numbers(v) for k, v in value.items()}
    if isinstance(value, decimal.Decimal):
        return ExactDecimal(value) if value.is_finite() else str(value)
    if isinstance(value, (list, tuple)):
        return [exact_numbers(v) for v in value]
    return value


def map_leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """A copy of ``value``'s dicts, lists and tuples with ``leaf(item)`` for every other item."""
    if isinstance(value, dict):
        return {key: map_leaves(item, leaf) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [map_leaves(item, leaf) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return leaf(value)


def master_time(value: object) -> datetime.datetime | None:
    """A message's ``cqrs_updated`` as an aware datetime (naive: UTC), None when unreadable."""
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, str):
        return _parse_time(value)
    return None


@lru_cache(maxsize=1024)  # a batch often shares one text; parsing dominates the lag figures
def _parse_time(text: str) -> datetime.datetime | None:
    text = text.strip()
    moment: datetime.datetime | None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parse_datetime(text)
        except ValueError:
            return None
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.timezone.utc)
