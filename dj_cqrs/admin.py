"""Admin integration: the "Synchronize selected ... via CQRS" action."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy

if TYPE_CHECKING:
    from django.contrib import admin
    from django.http import HttpRequest

    # What the mixin is mixed into, so that its calls of ModelAdmin's API are checked.
    _ModelAdminBase = admin.ModelAdmin[Any]
else:
    _ModelAdminBase = object


class CQRSAdminMasterSyncMixin(_ModelAdminBase):
    """Mix into a ``ModelAdmin`` of a master model (before ``admin.ModelAdmin``)."""

    def get_actions(self, request: HttpRequest, action_location: object = None) -> dict[str, Any]:
        if self.actions is not None and 'sync_items' not in self.actions:
            self.actions = [*self.actions, 'sync_items']
        if action_location is None:  # Django < 6.1, or the caller's default
            return super().get_actions(request)
        # (Django 6.1's signature; the stubs checked here are Django 5's.)
        return super().get_actions(request, action_location=action_location)  # type: ignore[call-arg]

    # QuerySet[Any]: the admin's own model, which overrides of the hook may name.
    def _cqrs_sync_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Hook: adjust the queryset before syncing (e.g. ``select_related``)."""
        return queryset

    def sync_items(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        from dj_cqrs.management.sync import sync_instances

        result = sync_instances(self._cqrs_sync_queryset(queryset))
        total = len(queryset)
        self.message_user(
            request,
            f'{total - len(result.failed)} successfully synced. '
            f'{len(result.failed)} failed: {result.failed}',
        )

    sync_items.short_description = gettext_lazy(  # type: ignore[attr-defined]
        'Synchronize selected %(verbose_name_plural)s via CQRS'
    )
