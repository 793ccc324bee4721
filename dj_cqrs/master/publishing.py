"""From a committed change to a message: one message per changed row per transaction.

On the first save of a row inside a transaction the row's revision is bumped in the database
(``F('cqrs_revision') + 1``) and a :class:`PendingMessage` is registered with
``transaction.on_commit`` on the database that was written. Later saves of the same row in the
same transaction, through any Python object, keep that revision and only point the pending
message at the newest object. At commit the message is built from the committed state and
handed to the producer; if the transaction (or the savepoint that registered it) rolls back,
Django drops the callback and nothing is sent.
"""

from __future__ import annotations

import logging
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from django.db import connections, transaction
from django.utils import timezone

from dj_cqrs.constants import LOGGER_NAME, SignalType
from dj_cqrs.dataclasses import TransportPayload, get_message_expiration_dt
from dj_cqrs.master.bulk_relate import active_bulk_relate
from dj_cqrs.outbox import sending as outbox_sending
from dj_cqrs.outbox import store as outbox_store
from dj_cqrs.values import get_json_valid_value

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin

logger = logging.getLogger(LOGGER_NAME)

_PENDING_ATTR = '_cqrs_pending_messages'


def _row_key(instance: RawMasterMixin) -> tuple[str, Any]:
    model = instance._meta.concrete_model or type(instance)  # (never None on a model)
    return (model._meta.label, instance.pk)


def pending_for(instance: RawMasterMixin, using: str) -> PendingMessage | None:
    """The message already registered for this row in the current transaction, if any."""
    connection = connections[using]
    if not connection.in_atomic_block:
        return None
    entries = connection.__dict__.get(_PENDING_ATTR) or {}
    entry = entries.get(_row_key(instance))
    if entry is not None and (
        entry.sent or not any(item[1] is entry for item in connection.run_on_commit)
    ):
        # Sent already, or dropped by a rollback of its (savepoint) block.
        entries.pop(_row_key(instance), None)
        return None
    return entry


@dataclass(eq=False, repr=False, slots=True)
class PendingMessage:
    """A SAVE or SYNC message waiting for the commit of the transaction that changed the row."""

    instance: RawMasterMixin
    using: str
    _: KW_ONLY
    sync: bool = False
    queue: str | None = None
    previous_data: dict[str, Any] | None = None
    publish: bool = True
    created: bool = False
    revision: Any = field(init=False)
    sent: bool = field(default=False, init=False)
    key: tuple[str, Any] = field(init=False)
    outbox_id: int | None = field(default=None, init=False)  # transactional outbox: its row
    staged: TransportPayload | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.revision = self.instance.cqrs_revision
        self.key = _row_key(self.instance)

    def __repr__(self) -> str:
        return f'<PendingMessage pk={self.instance.pk!r} {self.key[0]}>'

    def build_payload(self) -> TransportPayload:
        """The SAVE (or SYNC) message for the row's current state."""
        instance = self.instance
        # The model's method, called as the original calls it: overrides build the message.
        instance_data = instance.to_cqrs_dict(self.using, sync=self.sync)
        signal_type = SignalType.SYNC if self.sync else SignalType.SAVE
        meta = instance.get_cqrs_meta(
            instance_data=instance_data,
            previous_data=self.previous_data,
            signal_type=signal_type,
        )
        return TransportPayload(
            signal_type,
            cast(str, instance.CQRS_ID),  # MasterMeta.register refuses a model without it
            instance_data,
            instance.pk,
            self.queue,
            self.previous_data,
            expires=get_message_expiration_dt(),
            meta=meta,
        )

    def stage(self) -> None:
        """Transactional outbox: write (or rewrite) this message in the open transaction."""
        if not self.publish or not outbox_sending.transactional(self.using):
            return
        try:
            payload = self.build_payload()
        except Exception:
            # Left to the commit step, which builds it again and logs why it can't.
            logger.debug('CQRS outbox: message of %r not staged.', self, exc_info=True)
            return
        self.outbox_id = outbox_sending.stage(payload, using=self.using, row_id=self.outbox_id)
        self.staged = payload

    def unstage(self) -> None:
        """Drop the staged message: this SAVE no longer has to be sent."""
        if self.outbox_id is not None:
            outbox_store.delete([self.outbox_id], using=self.using)
            self.outbox_id = None
            self.staged = None

    def __call__(self) -> None:
        self.sent = True
        connection = connections[self.using]
        entries = connection.__dict__.get(_PENDING_ATTR)
        if entries and entries.get(self.key) is self:
            del entries[self.key]
        instance = self.instance
        # The saves count was reset by dj_cqrs.master.saves_count, registered before this.
        if not self.publish:
            return
        if self.outbox_id is not None and self.staged is not None:
            # Transactional outbox: publish the staged message, then delete its row.
            outbox_sending.send_staged(self.staged, self.outbox_id, using=self.using)
            return
        try:
            payload = self.build_payload()
        except type(instance).DoesNotExist:
            logger.error(
                "Can't produce message from master model '%s': The instance doesn't exist (pk=%s)",
                type(instance).__name__,
                instance.pk,
            )
            return
        except Exception:
            logger.exception(
                "CQRS message can't be built: pk = %s (%s).", instance.pk, instance.CQRS_ID
            )
            return
        _produce(payload)


def _produce(payload: TransportPayload) -> None:
    from dj_cqrs.controller import producer

    try:
        producer.produce(payload)
    except Exception:
        # The producer keeps what it cannot send; an error here must not stop the other
        # messages of the transaction nor reach the code that committed the data.
        logger.exception("CQRS couldn't be published: pk = %s (%s).", payload.pk, payload.cqrs_id)


def register_save(
    instance: RawMasterMixin,
    using: str,
    *,
    sync: bool = False,
    queue: str | None = None,
    publish: bool = True,
    created: bool = False,
) -> None:
    """Arrange for a message about ``instance`` when the current transaction commits."""
    if publish:
        context = active_bulk_relate()
        if context is not None:
            context.register(instance, using)
    connection = connections[using]
    existing = pending_for(instance, using) if not sync else None
    if existing is not None:
        existing.instance = instance
        existing.publish = existing.publish or publish
        existing.stage()
        return
    previous_data = None if sync else instance.get_tracked_fields_data()
    entry = PendingMessage(
        instance,
        using,
        sync=sync,
        queue=queue,
        previous_data=previous_data,
        publish=publish,
        created=created,
    )
    if connection.in_atomic_block and not sync:
        connection.__dict__.setdefault(_PENDING_ATTR, {})[entry.key] = entry
    entry.stage()
    transaction.on_commit(entry, using=using)


_DELETE_REVISION_ATTR = '_cqrs_revision_before_delete'


def note_revision_before_delete(instance: RawMasterMixin, using: str) -> None:
    """Read (and lock until the delete commits) the row's revision before it is deleted.

    The object may be older than the row; its DELETE must still carry a revision above the
    row's last message, or a replica would take it for a late DELETE and keep the row.
    """
    if instance.pk is None:
        return
    queryset = type(instance)._base_manager.using(using).filter(pk=instance.pk)
    if connections[using].in_atomic_block:
        queryset = queryset.select_for_update()
    revision = queryset.values_list('cqrs_revision', flat=True).first()
    if isinstance(revision, int):
        instance.__dict__[_DELETE_REVISION_ATTR] = revision


def register_delete(instance: RawMasterMixin, using: str) -> None:
    """Build the DELETE message now and send it when the transaction commits."""
    pending = pending_for(instance, using)
    revision = instance.__dict__.pop(_DELETE_REVISION_ATTR, None)
    if revision is None:
        revision = instance.cqrs_revision
    if pending is not None:
        # The row's SAVE of this transaction is superseded: a row created here never existed
        # for the replicas; an updated one is deleted one revision above its last message.
        pending.publish = False
        pending.unstage()
        if pending.created:
            return
        revision = pending.revision - 1
    elif hasattr(revision, 'resolve_expression'):
        revision = None
    instance_data: dict[str, Any] = {
        'id': get_json_valid_value(instance.pk),
        'cqrs_revision': (revision or 0) + 1,
        'cqrs_updated': str(timezone.now()),
    }
    try:
        custom = instance.get_custom_cqrs_delete_data()
        if custom:
            instance_data['custom'] = custom
        meta = instance.get_cqrs_meta(instance_data=instance_data, signal_type=SignalType.DELETE)
        payload = TransportPayload(
            SignalType.DELETE,
            cast(str, instance.CQRS_ID),
            instance_data,
            instance.pk,
            expires=get_message_expiration_dt(),
            meta=meta,
        )
    except Exception:
        logger.exception(
            "CQRS message can't be built: pk = %s (%s).", instance.pk, instance.CQRS_ID
        )
        return
    if outbox_sending.transactional(using):
        row_id = outbox_sending.stage(payload, using=using)
        on_commit = partial(outbox_sending.send_staged, payload, row_id, using=using)
        transaction.on_commit(on_commit, using=using)
        return
    transaction.on_commit(lambda: _produce(payload), using=using)
