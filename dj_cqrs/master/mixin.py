"""``RawMasterMixin`` / ``MasterMixin``: models whose committed changes are published."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from django.db import models, router
from django.db.models import F

from dj_cqrs.conf import get_settings
from dj_cqrs.constants import ALL_BASIC_FIELDS, TRACKED_FIELDS_ATTR_NAME
from dj_cqrs.master import publishing, saves_count
from dj_cqrs.master.manager import MasterManager
from dj_cqrs.master.meta import MasterMeta
from dj_cqrs.master.serialization import to_cqrs_dict
from dj_cqrs.master.signals import MasterSignals
from dj_cqrs.protocols import FieldNames, MessageMeta
from dj_cqrs.signals import post_bulk_create, post_update
from dj_cqrs.tracker import get_tracker


class RawMasterMixin(models.Model):
    """All master behaviour, without the registering metaclass.

    For diamond inheritance (``class Tree(MPTTModel, RawMasterMixin)``): register the model
    with ``MasterMeta.register(Tree)``.
    """

    CQRS_ID: ClassVar[str | None] = None
    """Unique id shared by the master model and its replicas; also the routing key."""

    CQRS_PRODUCE: ClassVar[bool] = True
    """False: never publish (revisions still count)."""

    CQRS_FIELDS: ClassVar[FieldNames] = ALL_BASIC_FIELDS
    """Field names to send (must include the pk), or ``'__all__'``."""

    CQRS_SERIALIZER: ClassVar[str | None] = None
    """Dotted path of a serializer class ``S(instance).data`` (DRF serializers work)."""

    CQRS_TRACKED_FIELDS: ClassVar[FieldNames | None] = None
    """``'__all__'`` or field names whose previous values are sent as ``previous_data``."""

    cqrs_revision = models.IntegerField(
        default=0,
        help_text="This field must be incremented on any model update. It's used to for CQRS sync.",
    )
    cqrs_updated = models.DateTimeField(
        auto_now=True,
        help_text='This field must be incremented on every model update. '
        "It's used to for CQRS sync.",
    )

    objects = models.Manager()
    cqrs = MasterManager()

    class Meta:
        abstract = True

    @property
    def cqrs_saves_count(self) -> int:
        """How many times this object was saved in the current transaction (0 once the
        transaction has committed; after a rollback, the next save counts from 1)."""
        return getattr(self, '_cqrs_saves_count', 0)

    @property
    def is_initial_cqrs_save(self) -> bool:
        return self.cqrs_saves_count < 2

    def reset_cqrs_saves_count(self) -> None:
        if hasattr(self, '_cqrs_saves_count'):
            self._cqrs_saves_count = 0

    def save(self, *args: Any, update_cqrs_fields: bool | None = None, **kwargs: Any) -> None:
        """Save and count the revision: +1 per committed change of the row.

        ``save(update_fields=[...])`` neither bumps nor publishes unless
        ``update_cqrs_fields=True`` (default: ``CQRS_AUTO_UPDATE_FIELDS``).
        """
        if update_cqrs_fields is None:
            update_cqrs_fields = get_settings().master.auto_update_fields
        update_fields = kwargs.get('update_fields')
        using = kwargs.get('using') or router.db_for_write(type(self), instance=self)
        self._cqrs_saves_count = saves_count.count_save(self, using)

        counts = update_fields is None or update_cqrs_fields
        if counts and not self._state.adding:
            pending = publishing.pending_for(self, using)
            if pending is None:
                self.cqrs_revision = F('cqrs_revision') + 1
                self.save_tracked_fields()
            else:
                # Same row already changed in this transaction: one message, one revision.
                self.cqrs_revision = pending.revision
            if update_fields is not None:
                kwargs['update_fields'] = {*update_fields, 'cqrs_revision', 'cqrs_updated'}
        else:
            self.save_tracked_fields()
        super().save(*args, **kwargs)

    def save_tracked_fields(self) -> None:
        """Snapshot ``previous_data`` for the message of this save."""
        tracker = get_tracker(type(self))
        if tracker is None:
            return
        data = tracker.created(self) if self._state.adding else tracker.changed(self)
        setattr(self, TRACKED_FIELDS_ATTR_NAME, data)

    def get_tracked_fields_data(self) -> dict[str, Any] | None:
        """The ``previous_data`` snapshot of the last save (None without tracked fields)."""
        return getattr(self, TRACKED_FIELDS_ATTR_NAME, None)

    def to_cqrs_dict(self, using: str | None = None, sync: bool = False) -> dict[str, Any]:
        """The ``instance_data`` of a message for this object."""
        return to_cqrs_dict(self, using=using, sync=sync)

    def cqrs_sync(self, using: str | None = None, queue: str | None = None) -> bool:
        """Send this row again as a SYNC message (to one replica ``queue``, or to all).

        Returns whether a message was really scheduled.
        """
        if self._state.adding or not self.CQRS_PRODUCE:
            return False
        if not self.CQRS_SERIALIZER:
            try:
                self.refresh_from_db(using=using)
            except type(self).DoesNotExist:
                return False
        if not self.is_sync_instance():
            return False
        using = using or router.db_for_write(type(self), instance=self)
        MasterSignals.post_save(type(self), instance=self, using=using, queue=queue, sync=True)
        return True

    def is_sync_instance(self) -> bool:
        """Whether this row is published at all (override to filter rows)."""
        return True

    def get_cqrs_meta(self, **kwargs: object) -> MessageMeta:
        """The ``meta`` of a message (default: ``CQRS['master']['meta_function']`` or ``{}``)."""
        function = get_settings().master.meta_function
        if function is None:
            return {}
        return function(obj=self, **kwargs)

    @classmethod
    def relate_cqrs_serialization(cls, queryset: models.QuerySet) -> models.QuerySet:
        """Hook: add ``select_related``/``prefetch_related`` for the serializer."""
        return queryset

    def get_custom_cqrs_delete_data(self) -> Any:
        """Hook: extra data sent under ``instance_data['custom']`` on DELETE."""
        return None

    @classmethod
    def call_post_bulk_create(
        cls, instances: Sequence[RawMasterMixin], using: str | None = None
    ) -> None:
        post_bulk_create.send(cls, instances=instances, using=using)

    @classmethod
    def call_post_update(
        cls, instances: Sequence[RawMasterMixin], using: str | None = None
    ) -> None:
        post_update.send(cls, instances=instances, using=using)


class MasterMixin(RawMasterMixin, metaclass=MasterMeta):
    """Base class of master models: every subclass with a ``CQRS_ID`` is registered."""

    class Meta:
        abstract = True
