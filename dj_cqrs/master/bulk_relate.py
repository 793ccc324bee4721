"""``bulk_relate_cqrs_serialization``: one query for the serializer re-reads of many rows."""

from __future__ import annotations

from contextlib import ContextDecorator
from typing import TYPE_CHECKING, Any

from dj_cqrs.state import cqrs_state

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin


class _BulkRelateCM(ContextDecorator):
    """Collects the rows published inside it and reads them back in one query per model.

    A row saved again after it was read is read again (the original kept the stale copy).
    Contexts nest: the innermost one is active, the outer one is restored on exit.
    """

    def __init__(self, cqrs_id: str | None = None) -> None:
        self.cqrs_id = cqrs_id
        self._registered: dict[tuple[str, str | None], set[Any]] = {}
        self._cache: dict[tuple[str, str | None], dict[Any, RawMasterMixin]] = {}
        self._outer: list[_BulkRelateCM | None] = []

    def __enter__(self) -> _BulkRelateCM:
        self._outer.append(getattr(cqrs_state, 'bulk_relate_cm', None))
        cqrs_state.bulk_relate_cm = self
        return self

    def __exit__(self, *exc: object) -> None:
        cqrs_state.bulk_relate_cm = self._outer.pop()
        self._registered.clear()
        self._cache.clear()

    def _key(self, instance: RawMasterMixin, using: str | None) -> tuple[str, str | None] | None:
        cqrs_id = getattr(instance, 'CQRS_ID', None)
        if not cqrs_id or (self.cqrs_id and cqrs_id != self.cqrs_id):
            return None
        return cqrs_id, using

    def register(self, instance: RawMasterMixin, using: str | None = None) -> None:
        key = self._key(instance, using)
        if key is None:
            return
        self._registered.setdefault(key, set()).add(instance.pk)
        self._cache.get(key, {}).pop(instance.pk, None)

    def prime(self, instances: list[RawMasterMixin]) -> None:
        """Serve these rows, just read, from the cache instead of reading them again."""
        for instance in instances:
            key = self._key(instance, instance._state.db)
            if key is not None:
                self._cache.setdefault(key, {})[instance.pk] = instance

    def get_cached_instance(
        self, instance: RawMasterMixin, using: str | None = None
    ) -> RawMasterMixin | None:
        key = self._key(instance, using)
        if key is None:
            return None
        cached = self._cache.setdefault(key, {})
        if instance.pk not in cached:
            wanted = [pk for pk in self._registered.get(key, ()) if pk not in cached]
            if instance.pk not in wanted:
                wanted.append(instance.pk)
            model = type(instance)
            queryset = model.relate_cqrs_serialization(model._default_manager.using(using))
            for row in queryset.filter(pk__in=wanted):
                cached[row.pk] = row
            self._registered.get(key, set()).difference_update(wanted)
        return cached.get(instance.pk)


def bulk_relate_cqrs_serialization(cqrs_id: str | None = None) -> _BulkRelateCM:
    """Context manager / decorator: read the rows of serializer models in bulk when publishing."""
    return _BulkRelateCM(cqrs_id=cqrs_id)


def active_bulk_relate() -> _BulkRelateCM | None:
    return getattr(cqrs_state, 'bulk_relate_cm', None)
