"""``RawReplicaMixin`` / ``ReplicaMixin``: local copies that messages keep up to date."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models

from dj_cqrs.conf import get_settings
from dj_cqrs.replica.manager import ReplicaManager
from dj_cqrs.replica.meta import ReplicaMeta
from dj_cqrs.replica.plan import plan_for


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
