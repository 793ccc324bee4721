"""Which model answers to which CQRS_ID, on each side."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import ConfigurationError

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin
    from dj_cqrs.replica.mixin import RawReplicaMixin

logger = logging.getLogger(LOGGER_NAME)

_Model = TypeVar('_Model', 'type[RawMasterMixin]', 'type[RawReplicaMixin]')


class RegistryMixin(Generic[_Model]):
    """A class-level map ``{cqrs_id: model class}``."""

    models: ClassVar[dict[str, Any]]  # (each registry declares its own value type)

    @classmethod
    def register_model(cls, model_cls: _Model) -> None:
        cqrs_id = cast(str, model_cls.CQRS_ID)  # (the model's metaclass checked it)
        known = cls.models.get(cqrs_id)
        if known is not None and _label(known) != _label(model_cls):
            raise ConfigurationError(f"Two models can't have the same CQRS_ID: {cqrs_id}.")
        cls.models[cqrs_id] = model_cls

    @classmethod
    def get_model_by_cqrs_id(cls, cqrs_id: str) -> _Model | None:
        """The model registered for ``cqrs_id``, or None (logged as an error)."""
        model = cls.models.get(cqrs_id)
        if model is None:
            logger.error('No model with such CQRS_ID: %s.', cqrs_id)
        return model


def _label(model_cls: type) -> str:
    return f'{model_cls.__module__}.{model_cls.__qualname__}'


class MasterRegistry(RegistryMixin['type[RawMasterMixin]']):
    """Master models of this service."""

    models: ClassVar[dict[str, type[RawMasterMixin]]] = {}


class ReplicaRegistry(RegistryMixin['type[RawReplicaMixin]']):
    """Replica models (and model-less consumers) of this service."""

    models: ClassVar[dict[str, type[RawReplicaMixin]]] = {}
