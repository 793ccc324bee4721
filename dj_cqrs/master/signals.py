"""The master's receivers: a model's save/delete and bulk signals schedule its messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import router
from django.db.models.signals import post_delete, post_save, pre_delete

from dj_cqrs.master import publishing
from dj_cqrs.master.serialization import resolve_expressions
from dj_cqrs.signals import post_bulk_create, post_update
from dj_cqrs.tracker import get_tracker

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin


class MasterSignals:
    """Connects a master model's Django signals to the publishing machinery."""

    @classmethod
    def register_model(cls, model_cls: type[RawMasterMixin]) -> None:
        post_save.connect(cls.post_save, sender=model_cls, weak=False)
        pre_delete.connect(cls.pre_delete, sender=model_cls, weak=False)
        post_delete.connect(cls.post_delete, sender=model_cls, weak=False)
        post_bulk_create.connect(cls.post_bulk_create, sender=model_cls, weak=False)
        post_update.connect(cls.post_bulk_update, sender=model_cls, weak=False)

    @classmethod
    def post_save(cls, sender: type[RawMasterMixin], **kwargs: Any) -> None:
        """After a save: fix the revision in memory, then schedule the message."""
        instance = kwargs['instance']
        using = kwargs.get('using') or router.db_for_write(sender, instance=instance)
        update_fields = kwargs.get('update_fields')
        sync = kwargs.get('sync', False)
        if not sync:
            # Read back a revision that the database computed (``F('cqrs_revision') + 1``)
            # before the tracked fields take the saved values as their new baseline.
            resolve_expressions(instance, using, ['cqrs_revision'])
            tracker = get_tracker(type(instance))
            if tracker is not None:
                tracker.store(instance)
        if kwargs.get('raw') and not getattr(sender, 'CQRS_PUBLISH_RAW', False):
            return
        if update_fields is not None and 'cqrs_revision' not in update_fields:
            return
        produce = sender.CQRS_PRODUCE and instance.is_sync_instance()
        if not produce and sync:
            return
        publishing.register_save(
            instance,
            using,
            sync=sync,
            queue=kwargs.get('queue'),
            publish=bool(produce),
            created=bool(kwargs.get('created')),
        )

    @classmethod
    def pre_delete(cls, sender: type[RawMasterMixin], **kwargs: Any) -> None:
        """Before a delete: note the row's revision (the object may be stale)."""
        instance = kwargs['instance']
        if not sender.CQRS_PRODUCE:
            return
        using = kwargs.get('using') or router.db_for_write(sender, instance=instance)
        publishing.note_revision_before_delete(instance, using)

    @classmethod
    def post_delete(cls, sender: type[RawMasterMixin], **kwargs: Any) -> None:
        instance = kwargs['instance']
        if not sender.CQRS_PRODUCE or not instance.is_sync_instance():
            return
        using = kwargs.get('using') or router.db_for_write(sender, instance=instance)
        publishing.register_delete(instance, using)

    @classmethod
    def post_bulk_create(cls, sender: type[RawMasterMixin], **kwargs: Any) -> None:
        using = kwargs.get('using')
        for instance in kwargs['instances']:
            cls.post_save(sender, instance=instance, using=using, bulk=True)

    post_bulk_update = post_bulk_create
