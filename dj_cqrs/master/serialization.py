"""A master instance as the ``instance_data`` dict of a message."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from django.db import models
from django.utils.module_loading import import_string

from dj_cqrs.constants import ALL_BASIC_FIELDS
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.master.bulk_relate import active_bulk_relate
from dj_cqrs.values import get_json_valid_value

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin

Converter = Callable[[Any], Any] | None
REVISION_FIELDS = ('cqrs_revision', 'cqrs_updated')
_SERIALIZER_ATTR = '_cqrs_serializer_class'


def _as_str(value: object) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


def converter_for(field: models.Field[Any, Any]) -> Converter:
    """How a field's Python value is written to JSON (None: as it is)."""
    if isinstance(field, (models.DateField, models.TimeField, models.UUIDField)):
        return _as_str
    if isinstance(field, (models.DurationField, models.BinaryField)):
        return get_json_valid_value  # ISO 8601 durations, base64 bytes
    return None


class SerializationPlan:
    """Which fields of a model go into ``instance_data``, in which order and how (cached)."""

    def __init__(self, model: type[RawMasterMixin]) -> None:
        declared = getattr(model, 'CQRS_FIELDS', ALL_BASIC_FIELDS)
        fields = [f for f in model._meta.concrete_fields if not f.many_to_many]
        if declared != ALL_BASIC_FIELDS:
            wanted = set(declared)
            fields = [f for f in fields if f.name in wanted and f.name not in REVISION_FIELDS]
            fields += [cast(models.Field, model._meta.get_field(name)) for name in REVISION_FIELDS]
        self.columns: list[tuple[str, str, Converter]] = [
            (f.name, f.attname, converter_for(f)) for f in fields
        ]

    def serialize(self, instance: RawMasterMixin) -> dict[str, Any]:
        state = instance.__dict__
        data = {}
        for name, attname, convert in self.columns:
            value = state[attname] if attname in state else getattr(instance, attname)
            data[name] = value if convert is None else convert(value)
        return data


plan_for = functools.cache(SerializationPlan)


def serialize_with_serializer(
    instance: RawMasterMixin, *, using: str | None = None, sync: bool = False
) -> dict[str, Any]:
    """``instance_data`` built by the model's ``CQRS_SERIALIZER`` from the committed row.

    On SAVE the row is read again (committed state, with the model's related objects);
    ``sync=True`` serializes the given object, which ``cqrs_sync`` has just read.
    """
    model = type(instance)
    if not sync:
        db = using or instance._state.db
        context = active_bulk_relate()
        cached = None if context is None else context.get_cached_instance(instance, db)
        if cached is None:
            queryset = model.relate_cqrs_serialization(model._default_manager.using(db))
            cached = queryset.get(pk=instance.pk)
        instance = cached
    serializer = model.__dict__.get(_SERIALIZER_ATTR)
    if serializer is None:
        try:
            serializer = import_string(cast(str, model.CQRS_SERIALIZER))
        except ImportError as err:
            raise ConfigurationError(
                f"Model {model!r}: CQRS_SERIALIZER can't be imported ({model.CQRS_SERIALIZER!r})."
            ) from err
        setattr(model, _SERIALIZER_ATTR, serializer)
    data = dict(serializer(instance).data)
    data['cqrs_revision'] = instance.cqrs_revision
    data['cqrs_updated'] = _as_str(instance.cqrs_updated)
    return data


def to_cqrs_dict(
    instance: RawMasterMixin, *, using: str | None = None, sync: bool = False
) -> dict[str, Any]:
    """The ``instance_data`` of a SAVE or SYNC message for ``instance``."""
    model = type(instance)
    if model.CQRS_SERIALIZER:
        return serialize_with_serializer(instance, using=using, sync=sync)
    plan = plan_for(model)
    resolve_expressions(instance, using, (attname for _, attname, _ in plan.columns))
    return plan.serialize(instance)


def resolve_expressions(
    instance: RawMasterMixin, using: str | None, attnames: Iterable[str]
) -> None:
    """Replace field values that are still query expressions (``F() + 1``) by the stored ones."""
    state = instance.__dict__
    stale = [attname for attname in attnames if hasattr(state.get(attname), 'resolve_expression')]
    if stale:
        db = using or instance._state.db
        values = type(instance)._base_manager.using(db).filter(pk=instance.pk).values(*stale).get()
        state.update(values)
