"""The ``cqrs`` manager of master models: bulk operations that publish."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from dj_cqrs.constants import LOGGER_NAME, TRACKED_FIELDS_ATTR_NAME
from dj_cqrs.tracker import get_tracker

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin

logger = logging.getLogger(LOGGER_NAME)

_M = TypeVar('_M', bound='RawMasterMixin')


class MasterManager(models.Manager[_M]):
    """``Model.cqrs``: a normal manager plus ``bulk_create`` and ``bulk_update`` that publish."""

    # The original's signatures: options by keyword only; bulk_update wraps update().
    def bulk_create(self, objs: Iterable[_M], **kwargs: Any) -> list[_M]:  # type: ignore[override]
        """Insert in bulk, then publish one SAVE per created row that has a primary key."""
        objs = list(objs)
        for obj in objs:
            obj.save_tracked_fields()
        created = super().bulk_create(objs, **kwargs)
        published = [obj for obj in created if obj.pk is not None]
        if len(published) != len(created):
            logger.warning(
                'CQRS bulk_create: %d object(s) of %s have no primary key after the insert '
                'and were not published.',
                len(created) - len(published),
                self.model.__name__,
            )
        if published:
            self.model.call_post_bulk_create(published, using=self.db)
        return created

    def bulk_update(self, queryset: models.QuerySet[_M], **kwargs: Any) -> int | None:  # type: ignore[override]
        """``queryset.update(**kwargs)`` that bumps revisions and publishes each row.

        Returns the number of updated rows, or None when the model tracks fields and nothing
        matched.
        """
        model = self.model
        db = queryset.db
        base = model._base_manager.using(db)
        tracker = get_tracker(model)
        with transaction.atomic(using=db, savepoint=False):
            pks = list(queryset.select_for_update().values_list('pk', flat=True))
            previous: dict[Any, Any] = {}
            if tracker is not None:
                previous = {obj.pk: tracker.current(obj) for obj in base.filter(pk__in=pks)}
                if not previous:
                    return None
            count = base.filter(pk__in=pks).update(
                cqrs_revision=F('cqrs_revision') + 1,
                cqrs_updated=timezone.now(),
                **kwargs,
            )
            objs = list(base.filter(pk__in=pks))
            for obj in objs:
                setattr(obj, TRACKED_FIELDS_ATTR_NAME, previous.get(obj.pk))
            model.call_post_update(objs, using=db)
        return count
