"""What a replica model accepts from a message, worked out once per model."""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import models
from django.utils.dateparse import parse_duration

from dj_cqrs.values import JsonNumber

REVISION_FIELDS = ('cqrs_revision', 'cqrs_updated')

# ``pre_save`` implementations that hand back the attribute as it is (dates: unless auto_now*).
_PLAIN_PRE_SAVE = frozenset(
    {
        models.Field.pre_save,
        models.DateField.pre_save,
        models.DateTimeField.pre_save,
        models.TimeField.pre_save,
    }
)


def pre_save_is_plain(field: models.Field, *, adding: bool) -> bool:
    """Whether ``field.pre_save()`` just returns the value set on the instance.

    Only then may a row be written without ``save()`` (queryset ``update()``, bulk SQL) and
    end up as ``save()`` would write it: ``auto_now``, ``auto_now_add`` on inserts, and any
    field class with its own ``pre_save`` (django-model-utils' ``AutoLastModifiedField``, slug
    or file fields, custom fields) compute what is stored.
    """
    if type(field).pre_save not in _PLAIN_PRE_SAVE:
        return False
    if getattr(field, 'auto_now', False):
        return False
    return not (adding and getattr(field, 'auto_now_add', False))


def _to_decimal(value: Any) -> Any:
    return value.as_decimal() if isinstance(value, JsonNumber) else value


def _to_duration(value: Any) -> Any:
    if isinstance(value, str):
        parsed = parse_duration(value)
        return value if parsed is None else parsed
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(microseconds=value)
    return value


def _to_bytes(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value.encode('ascii'), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            return value.encode('utf-8')
    return value


class ReplicaPlan:
    """Field facts of one replica model used on every message."""

    def __init__(self, model: type[models.Model]) -> None:
        meta = model._meta
        fields = list(meta.fields)
        self.pk_name: str = meta.pk.name
        self.pk_names = frozenset((meta.pk.name, meta.pk.attname))  # never set by an update
        self.field_names = frozenset(f.name for f in fields)
        self.required = tuple(f.name for f in fields if not f.null)
        self.relations = {f.name: f.attname for f in fields if f.is_relation and f.concrete}
        self.converters: dict[str, Callable[[Any], Any]] = {}
        for f in fields:
            if isinstance(f, models.DecimalField):
                self.converters[f.name] = _to_decimal
            elif isinstance(f, models.DurationField):
                self.converters[f.name] = _to_duration
            elif isinstance(f, models.BinaryField):
                self.converters[f.name] = _to_bytes

    def to_model_kwargs(self, data: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the model: FKs by raw id (``parent_id``), exact values."""
        kwargs = {}
        relations = self.relations
        converters = self.converters
        for key, value in data.items():
            convert = converters.get(key)
            if convert is not None:
                value = convert(value)
            attname = relations.get(key)
            if attname is not None and not isinstance(value, models.Model):
                key = attname
            kwargs[key] = value
        return kwargs


plan_for = functools.cache(ReplicaPlan)
"""The plan of a replica model, worked out on its first use."""
