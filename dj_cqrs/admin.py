"""Admin integration: the "Synchronize selected ... via CQRS" action."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy


class CQRSAdminMasterSyncMixin:
    """Mix into a ``ModelAdmin`` of a master model (before ``admin.ModelAdmin``)."""

    def get_actions(self, request: Any, action_location: Any = None) -> Any:
        if self.actions is not None and 'sync_items' not in self.actions:
            self.actions = [*self.actions, 'sync_items']
        if action_location is None:  # Django < 6.1, or the caller's default
            return super().get_actions(request)  # type: ignore[misc]
        return super().get_actions(request, action_location=action_location)  # type: ignore[misc]

    def _cqrs_sync_queryset(self, queryset: QuerySet) -> QuerySet:
        """Hook: adjust the queryset before syncing (e.g. ``select_related``)."""
        return queryset

    def sync_items(self, request: Any, queryset: QuerySet) -> None:
        from dj_cqrs.management.sync import sync_instances

        result = sync_instances(self._cqrs_sync_queryset(queryset))
        total = len(queryset)
        self.message_user(
            request,
            f'{total - len(result.failed)} successfully synced. '
            f'{len(result.failed)} failed: {result.failed}',
        )

    sync_items.short_description = gettext_lazy(
        'Synchronize selected %(verbose_name_plural)s via CQRS'
    )
