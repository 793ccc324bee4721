"""Structural types of what the library uses on master models, replica models and transports."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from django.db.models.options import Options

    from dj_cqrs.dataclasses import TransportPayload

# Leaf module: nothing from dj_cqrs (or Django) is imported at run time, so every layer may
# import these names without pulling in the side they describe.

FieldNames = str | Sequence[str]
"""``'__all__'`` or a list/tuple of field names (``CQRS_FIELDS``, ``CQRS_TRACKED_FIELDS``)."""

MessageMeta = dict[str, Any] | None
"""The ``meta`` of a message: ``get_cqrs_meta()``'s dict, None when a body has none."""

DeadLetterReport = Callable[[int, int, bytes], object]
"""``report(index, total, body)``, called after each dead letter is retried."""


class MasterModel(Protocol):
    """An instance of a master model: what publishing reads and calls on it.

    Subclasses of ``RawMasterMixin`` / ``MasterMixin`` match. Members are read-only (a model
    that sets ``CQRS_ID = 'x'`` has a ``str`` there, which a settable member would refuse).
    """

    @property
    def pk(self) -> Any: ...

    @property
    def cqrs_revision(self) -> int: ...

    @property
    def cqrs_updated(self) -> datetime.datetime: ...

    @property
    def CQRS_ID(self) -> str | None: ...

    @property
    def CQRS_PRODUCE(self) -> bool: ...

    @property
    def CQRS_FIELDS(self) -> FieldNames: ...

    @property
    def CQRS_SERIALIZER(self) -> str | None: ...

    @property
    def CQRS_TRACKED_FIELDS(self) -> FieldNames | None: ...

    @property
    def _meta(self) -> Options[Any]: ...

    @property
    def cqrs_saves_count(self) -> int: ...

    def reset_cqrs_saves_count(self) -> None: ...

    def save_tracked_fields(self) -> None: ...

    def get_tracked_fields_data(self) -> dict[str, Any] | None: ...

    def to_cqrs_dict(self, using: str | None = None, sync: bool = False) -> dict[str, Any]: ...

    def cqrs_sync(self, using: str | None = None, queue: str | None = None) -> bool: ...

    def is_sync_instance(self) -> bool: ...

    def get_cqrs_meta(self, **kwargs: object) -> MessageMeta: ...

    def get_custom_cqrs_delete_data(self) -> Any: ...


class ReplicaModel(Protocol):
    """A replica *class* as registered in ``ReplicaRegistry``: what the consumer calls on it.

    ``RawReplicaMixin`` subclasses (not necessarily Django models) and ``ReplicaMixin`` models
    match, as class objects. Members are read-only, as in :class:`MasterModel`.
    """

    @property
    def CQRS_ID(self) -> str | None: ...

    @property
    def CQRS_NO_DB_OPERATIONS(self) -> bool: ...

    @property
    def CQRS_META(self) -> bool: ...

    @property
    def CQRS_ONLY_DIRECT_SYNCS(self) -> bool: ...

    def cqrs_save(
        self,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: MessageMeta = None,
    ) -> Any: ...

    def cqrs_delete(self, master_data: dict[str, Any], meta: MessageMeta = None) -> bool: ...

    def should_retry_cqrs(
        self, current_retry: int, exception: BaseException | None = None
    ) -> bool: ...

    def get_cqrs_retry_delay(self, current_retry: int) -> int: ...


class TransportClass(Protocol):
    """A transport *class* (``BaseTransport`` and subclasses: used through class methods)."""

    consumers: dict[str, Any]

    def produce(self, payload: TransportPayload) -> Any:
        """Publish one payload (raises ``PublishError`` on failure)."""

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        """Consume messages for this service's replica models."""

    def clean_connection(self, *args: Any, **kwargs: Any) -> None:
        """Close this process's broker connections."""

    def dead_letters_count(self) -> int: ...

    def dead_letters_dump(self) -> list[bytes]: ...

    def dead_letters_retry(self, report: DeadLetterReport | None = None) -> int: ...

    def dead_letters_purge(self) -> int: ...


if TYPE_CHECKING:
    # Checked by mypy only (nothing is imported at run time): the library's own base classes
    # must keep matching these protocols, so a change to one side that the other misses fails
    # the type check.
    from dj_cqrs.master.mixin import RawMasterMixin
    from dj_cqrs.replica.mixin import RawReplicaMixin
    from dj_cqrs.transport.base import BaseTransport

    def _conformance(master: RawMasterMixin) -> None:
        _master: MasterModel = master
        _replica: ReplicaModel = RawReplicaMixin
        _transport: TransportClass = BaseTransport
