"""``RawReplicaMixin`` / ``ReplicaMixin``: local copies that messages keep up to date, and
``ReplicaMeta``, which registers them after checking their CQRS attributes."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from django.db import models
from django.db.models.base import ModelBase

from dj_cqrs.conf import get_settings
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.replica.manager import ReplicaManager
from dj_cqrs.replica.plan import plan_for


class ReplicaMeta(ModelBase):
    """Registers every class created with it that declares a ``CQRS_ID``.

    Abstract subclasses with a ``CQRS_ID`` are registered too: they are the DB-less replicas
    (custom ``cqrs_save``/``cqrs_delete``). Abstract bases without one are left alone.
    """

    def __new__(mcs, *args: Any, **kwargs: Any) -> type[models.Model]:
        model_cls = cast('type[models.Model]', super().__new__(mcs, *args, **kwargs))
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


class RawReplicaMixin:
    """A consumer of one ``CQRS_ID`` that is not (necessarily) a model.

    Subclasses implement ``cqrs_save`` and ``cqrs_delete`` and are registered with
    ``ReplicaMeta.register(cls)``.
    """

    CQRS_ID: ClassVar[str | None] = None
    CQRS_NO_DB_OPERATIONS: ClassVar[bool] = True
    CQRS_META: ClassVar[bool] = False
    CQRS_ONLY_DIRECT_SYNCS: ClassVar[bool] = False

    @classmethod
    def cqrs_save(
        cls,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: Any = None,
    ) -> Any:
        raise NotImplementedError

    @classmethod
    def cqrs_delete(cls, master_data: dict[str, Any], meta: Any = None) -> bool:
        raise NotImplementedError

    @staticmethod
    def should_retry_cqrs(current_retry: int, exception: BaseException | None = None) -> bool:
        """Whether a failed message is tried again (default: up to ``CQRS_MAX_RETRIES``)."""
        max_retries = get_settings().replica.max_retries
        return max_retries is None or current_retry < max_retries

    @staticmethod
    def get_cqrs_retry_delay(current_retry: int) -> int:
        """Seconds before the next try (default: ``CQRS_RETRY_DELAY``)."""
        return get_settings().replica.retry_delay


class ReplicaMixin(RawReplicaMixin, models.Model, metaclass=ReplicaMeta):
    """Base class of replica models."""

    CQRS_MAPPING: ClassVar[dict[str, str] | None] = None
    """``{master field name: replica field name}``; only mapped fields are used."""

    CQRS_CUSTOM_SERIALIZATION: ClassVar[bool] = False
    """True: message data goes to ``cqrs_create``/``cqrs_update`` unfiltered."""

    CQRS_SELECT_FOR_UPDATE: ClassVar[bool] = False
    """True: lock the row while a message is applied."""

    CQRS_NO_DB_OPERATIONS: ClassVar[bool] = False

    cqrs_revision = models.IntegerField()
    cqrs_updated = models.DateTimeField()

    objects = models.Manager()
    cqrs = ReplicaManager()

    class Meta:
        abstract = True

    @classmethod
    def cqrs_save(
        cls,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: Any = None,
    ) -> Any:
        """Apply a SAVE or SYNC message (override only if you re-implement the revision rules)."""
        if cls.CQRS_NO_DB_OPERATIONS:
            return super().cqrs_save(master_data, previous_data=previous_data, sync=sync, meta=meta)
        return cls.cqrs.save_instance(master_data, previous_data, sync, meta)

    @classmethod
    def cqrs_create(
        cls,
        sync: bool,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        meta: Any = None,
    ) -> Any:
        """Create the row (hook). ForeignKeys are set from the raw ids of the message."""
        return cls._default_manager.create(**plan_for(cls).to_model_kwargs(mapped_data))

    def cqrs_update(
        self,
        sync: bool,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        meta: Any = None,
    ) -> Any:
        """Update the row (hook)."""
        for key, value in plan_for(type(self)).to_model_kwargs(mapped_data).items():
            setattr(self, key, value)
        self.save()
        return self

    @classmethod
    def cqrs_delete(cls, master_data: dict[str, Any], meta: Any = None) -> bool:
        """Apply a DELETE message."""
        if cls.CQRS_NO_DB_OPERATIONS:
            return super().cqrs_delete(master_data, meta=meta)
        return cls.cqrs.delete_instance(master_data)
