"""Registration of master models (``MasterMeta``) and the checks of their CQRS attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.db import models
from django.db.models.base import ModelBase
from django.db.models.signals import class_prepared

from dj_cqrs.constants import ALL_BASIC_FIELDS
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.master.signals import MasterSignals
from dj_cqrs.registries import MasterRegistry
from dj_cqrs.tracker import CQRSTracker

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin


class MasterMeta(ModelBase):
    """Registers every concrete model class created with it that declares a ``CQRS_ID``."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any], **kwargs: Any
    ) -> ModelBase:
        model_cls = cast('type[RawMasterMixin]', super().__new__(mcs, name, bases, attrs, **kwargs))
        if name == 'MasterMixin' or model_cls._meta.abstract:
            return model_cls
        if model_cls._meta.proxy:
            _connect_proxy(model_cls)
            return model_cls
        return MasterMeta.register(model_cls)

    @staticmethod
    def register(model_cls: type[RawMasterMixin]) -> type[RawMasterMixin]:
        """Check the model's CQRS attributes, then register it and connect its signals."""
        name = model_cls.__name__
        if not getattr(model_cls, 'CQRS_ID', None):
            raise ConfigurationError(
                f'CQRS_ID must be set for every model, that uses CQRS ({name}).'
            )
        if model_cls.CQRS_FIELDS != ALL_BASIC_FIELDS and model_cls.CQRS_SERIALIZER is not None:
            raise ConfigurationError(
                f"Model {name}: CQRS_FIELDS can't be set together with CQRS_SERIALIZER."
            )
        message = f'CQRS_FIELDS field is not correctly set for model {name}.'
        _check_names(model_cls, 'CQRS_FIELDS', message)
        if model_cls.CQRS_TRACKED_FIELDS is not None:
            message = f'Model {name}: Invalid configuration for CQRS_TRACKED_FIELDS'
            _check_names(model_cls, 'CQRS_TRACKED_FIELDS', message)
            CQRSTracker.add_to_model(model_cls)
        MasterRegistry.register_model(model_cls)
        MasterSignals.register_model(model_cls)
        return model_cls


def _check_names(model_cls: type[RawMasterMixin], attr: str, not_a_list: str) -> None:
    """``'__all__'``, or a list/tuple: duplicates, the pk (``CQRS_FIELDS`` only) and unknown
    names, in this order."""
    declared = getattr(model_cls, attr)
    name = model_cls.__name__
    if declared == ALL_BASIC_FIELDS:
        return
    if not isinstance(declared, (list, tuple)):
        raise ConfigurationError(not_a_list)
    if len(set(declared)) != len(declared):
        raise ConfigurationError(f'Duplicate names in {attr} field for model {name}.')
    if attr == 'CQRS_FIELDS' and model_cls._meta.pk.name not in declared:
        raise ConfigurationError(f'PK is not in CQRS_FIELDS for model {name}.')
    unknown = sorted(set(declared) - {f.name for f in model_cls._meta.fields})
    if unknown:
        raise ConfigurationError(
            f'{attr} field is not correctly set for model {name} (unknown: {unknown}).'
        )


def _connect_proxy(proxy_cls: type[models.Model]) -> None:
    """Saves through a proxy of a registered master publish like saves of the model itself."""
    concrete = proxy_cls._meta.concrete_model
    cqrs_id = getattr(concrete, 'CQRS_ID', None)
    if cqrs_id is not None and MasterRegistry.models.get(cqrs_id) is concrete:
        MasterSignals.register_model(cast('type[RawMasterMixin]', proxy_cls))


def _on_class_prepared(sender: type[models.Model], **kwargs: object) -> None:
    # Proxies of models registered with MasterMeta.register() are made by plain ModelBase.
    if sender._meta.proxy and not isinstance(sender, MasterMeta):
        _connect_proxy(sender)


class_prepared.connect(_on_class_prepared, weak=False)
