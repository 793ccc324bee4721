"""Which model answers to which CQRS_ID, on each side."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import ConfigurationError

logger = logging.getLogger(LOGGER_NAME)


class RegistryMixin:
    """A class-level map ``{cqrs_id: model class}``."""

    models: ClassVar[dict[str, Any]]

    @classmethod
    def register_model(cls, model_cls: Any) -> None:
        cqrs_id = model_cls.CQRS_ID
        known = cls.models.get(cqrs_id)
        if known is not None and _label(known) != _label(model_cls):
            raise ConfigurationError(f"Two models can't have the same CQRS_ID: {cqrs_id}.")
        cls.models[cqrs_id] = model_cls

    @classmethod
    def get_model_by_cqrs_id(cls, cqrs_id: str) -> Any:
        """The model registered for ``cqrs_id``, or None (logged as an error)."""
        model = cls.models.get(cqrs_id)
        if model is None:
            logger.error('No model with such CQRS_ID: %s.', cqrs_id)
        return model


def _label(model_cls: Any) -> str:
    return f'{model_cls.__module__}.{model_cls.__qualname__}'


class MasterRegistry(RegistryMixin):
    """Master models of this service."""

    models: ClassVar[dict[str, Any]] = {}


class ReplicaRegistry(RegistryMixin):
    """Replica models (and model-less consumers) of this service."""

    models: ClassVar[dict[str, Any]] = {}
