"""Master model and message types any layer may import (no dj_cqrs or Django at run time)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from django.db.models.options import Options

__all__ = ['FieldNames', 'MasterModel', 'MessageMeta']

FieldNames = str | Sequence[str]
"""``'__all__'`` or a list/tuple of field names (``CQRS_FIELDS``, ``CQRS_TRACKED_FIELDS``)."""

MessageMeta = dict[str, Any] | None
"""The ``meta`` of a message: ``get_cqrs_meta()``'s dict, None when a body has none."""


class MasterModel(Protocol):
    """An instance of a master model: what publishing reads and calls on it.

    Subclasses of ``RawMasterMixin`` / ``MasterMixin`` match. Members are read-only (a model
    that sets ``CQRS_ID = 'x'`` has a ``str`` there, which a settable member would refuse).
    """

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
    def pk(self) -> Any: ...

    @property
    def _meta(self) -> Options[Any]: ...

    @property
    def cqrs_revision(self) -> int: ...

    @property
    def cqrs_updated(self) -> datetime.datetime: ...

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


if TYPE_CHECKING:
    # Checked by mypy only (nothing is imported at run time): the library's own base class
    # must keep matching the protocol, so a change to one side that the other misses fails.
    from dj_cqrs.master.mixin import RawMasterMixin

    def _conformance(master: RawMasterMixin) -> None:
        _master: MasterModel = master
