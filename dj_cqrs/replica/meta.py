"""Registration of replica models (``ReplicaMeta``) and the checks of their CQRS attributes."""

from __future__ import annotations

from typing import Any, cast

from django.db.models import Model
from django.db.models.base import ModelBase

from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.registries import ReplicaRegistry


class ReplicaMeta(ModelBase):
    """Registers every class created with it that declares a ``CQRS_ID``.

    Abstract subclasses with a ``CQRS_ID`` are registered too: they are the DB-less replicas
    (custom ``cqrs_save``/``cqrs_delete``). Abstract bases without one are left alone.
    """

    def __new__(mcs, *args: Any, **kwargs: Any) -> type[Model]:
        model_cls = cast('type[Model]', super().__new__(mcs, *args, **kwargs))
        name = args[0] if args else kwargs.get('name')
        if name == 'ReplicaMixin' or model_cls._meta.proxy:
            return model_cls
        if model_cls._meta.abstract and not getattr(model_cls, 'CQRS_ID', None):
            return model_cls
        ReplicaMeta.register(model_cls)
        return model_cls

    @staticmethod
    def register(model_cls: Any) -> None:
        """Check the class's CQRS attributes and register it."""
        if not getattr(model_cls, 'CQRS_ID', None):
            raise ConfigurationError(
                f'CQRS_ID must be set for every model, that uses CQRS ({model_cls.__name__}).'
            )
        _check_mapping(model_cls)
        ReplicaRegistry.register_model(model_cls)


def _check_mapping(model_cls: Any) -> None:
    mapping = getattr(model_cls, 'CQRS_MAPPING', None)
    if mapping is None:
        return
    name = model_cls.__name__
    if not isinstance(mapping, dict):
        raise ConfigurationError(f'CQRS_MAPPING field is not correctly set for model {name}.')
    targets = list(mapping.values())
    if len(set(targets)) != len(targets):
        raise ConfigurationError(f'Duplicate names in CQRS_MAPPING field for model {name}.')
    meta = getattr(model_cls, '_meta', None)
    if meta is None or meta.abstract:
        return
    if meta.pk.name not in targets:
        raise ConfigurationError(f'PK is not in CQRS_MAPPING for model {name}.')
    field_names = {f.name for f in meta.fields}
    if not set(targets) <= field_names:
        unknown = sorted(set(targets) - field_names)
        raise ConfigurationError(
            f'CQRS_MAPPING field is not correctly set for model {name} (unknown: {unknown}).'
        )
