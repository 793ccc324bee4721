"""``ReplicaManager``: the revision rules that decide whether a message changes a row.

Beyond the original's rules, concurrent workers never move a row back to an older revision
(:mod:`dj_cqrs.replica.convergence`) and deletes leave tombstones (:mod:`.tombstones`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import Error, IntegrityError, connections, models, router, transaction

from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.dataclasses import usable_pk
from dj_cqrs.exceptions import UnusablePayloadError
from dj_cqrs.quoting import quote_for_log
from dj_cqrs.replica import convergence, rowlocks, tombstones
from dj_cqrs.replica.plan import REVISION_FIELDS, plan_for
from dj_cqrs.values import master_time

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import ReplicaMixin

    _Manager = models.Manager[ReplicaMixin]
else:
    _Manager = models.Manager

logger = logging.getLogger(LOGGER_NAME)

_CAS_ATTEMPTS = 3

LogLines = list[tuple[int, str, tuple[object, ...]]]
"""Log lines kept for later: ``(level, message, args)`` each."""


def log(lines: LogLines | None, level: int, message: str, *args: object) -> None:
    """Log a line now (``lines`` None) or keep it in ``lines``."""
    if lines is None:
        logger.log(level, message, *args, stacklevel=2)
    else:
        lines.append((level, message, args))


def revision_allows(
    cqrs_id: str | None, pk: Any, existing: int, new: int, sync: bool, lines: LogLines | None
) -> bool:
    """Whether revision ``new`` of a SAVE (``sync``: of a SYNC) may replace ``existing``."""
    if existing > new:
        # The same line but for its start: a SYNC may go back (warned), a SAVE may not.
        start = 'CQRS revision downgrade on sync' if sync else 'Wrong CQRS sync order'
        message = start + ': pk = %s, cqrs_revision = new %s / existing %s (%s).'
        log(lines, logging.WARNING if sync else logging.ERROR, message, pk, new, existing, cqrs_id)
        return sync
    if sync:
        return True
    if existing == new:
        message = 'Received duplicate CQRS data: pk = %s, cqrs_revision = %s (%s).'
        log(lines, logging.ERROR, message, pk, new, cqrs_id)
        if new == 0:
            message = 'CQRS potential creation race condition: pk = %s (%s).'
            log(lines, logging.WARNING, message, pk, cqrs_id)
        return False
    if new != existing + 1:
        message = 'Lost or filtered out %s CQRS packages: pk = %s, cqrs_revision = %s (%s)'
        log(lines, logging.WARNING, message, new - existing - 1, pk, new, cqrs_id)
    return True


class ReplicaManager(_Manager):
    """``Model.cqrs`` on replicas: maps message data and applies it under the revision rules."""

    def save_instance(
        self,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: Any = None,
    ) -> Any:
        """Create or update the row of a SAVE/SYNC message; falsy result = failure.

        Called outside a transaction (``Model.cqrs_save()`` from user code), it runs in its own,
        so that the row locks it may take are valid on every database.
        """
        alias = router.db_for_write(self.model)
        if connections[alias].in_atomic_block:
            return self._save_instance(master_data, previous_data, sync, meta)
        try:
            with transaction.atomic(using=alias):
                saved = self._save_instance(master_data, previous_data, sync, meta)
                if not saved:
                    transaction.set_rollback(True, using=alias)
                return saved
        finally:
            rowlocks.release_ended(connections[alias])  # MariaDB/MySQL, after a rollback

    def _save_instance(
        self,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None,
        sync: bool,
        meta: Any,
    ) -> Any:
        mapped = self._map_save_data(master_data)
        if mapped is None:
            return None
        previous_data = self._map_previous_data(previous_data)
        instance = self._current_row(mapped[plan_for(self.model).pk_name])
        if instance is None:
            return self._create_missing(mapped, previous_data, sync, meta)
        return self.update_instance(instance, mapped, previous_data, sync, meta)

    def _current_row(self, pk: Any) -> Any:
        model = self.model
        queryset = model._default_manager.filter(**{plan_for(model).pk_name: pk}).order_by()
        # Custom hooks (no compare-and-set), or the model asks for it: lock the row read.
        if model.CQRS_SELECT_FOR_UPDATE or not convergence.compare_and_set_ok(model):
            queryset = queryset.select_for_update()
        return queryset.first()

    def _create_missing(
        self,
        mapped: dict[str, Any],
        previous_data: dict[str, Any] | None,
        sync: bool,
        meta: Any,
    ) -> Any:
        """Create a row the replica does not have, unless it deleted a newer state of it."""
        model = self.model
        alias = router.db_for_write(model)
        pk = mapped[plan_for(model).pk_name]
        if tombstones.lock_row(model, pk, alias):
            # Another worker may have created the row while we waited for the lock.
            instance = self._current_row(pk)
            if instance is not None:
                return self.update_instance(instance, mapped, previous_data, sync, meta)
        tombstone = tombstones.find(model, pk, alias)
        if tombstone is not None:
            revision = mapped['cqrs_revision']
            moment = master_time(mapped['cqrs_updated'])
            if tombstones.not_newer(
                revision, moment, tombstone.cqrs_revision, tombstone.deleted_at
            ):
                logger.warning(
                    'CQRS deleted data is not restored: pk = %s, '
                    'cqrs_revision = new %s / deleted %s (%s).',
                    pk,
                    revision,
                    tombstone.cqrs_revision,
                    model.CQRS_ID,
                )
                return True
        created = self.create_instance(mapped, previous_data, sync, meta)
        if created and tombstone is not None:
            tombstones.forget(model, pk, alias)
        return created

    def create_instance(
        self,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: Any = None,
    ) -> Any:
        model = self.model
        pk = mapped_data.get(plan_for(model).pk_name)
        try:
            # A savepoint, so that a row created meanwhile by another worker (IntegrityError)
            # leaves the transaction usable and the message is applied as an update.
            with transaction.atomic(using=router.db_for_write(model)):
                return model.cqrs_create(
                    sync, mapped_data, **_hook_kwargs(model, previous_data, meta)
                )
        except (Error, ValidationError) as err:
            if isinstance(err, IntegrityError) and pk is not None:
                instance = self._current_row(pk)
                if instance is not None:
                    return self.update_instance(instance, mapped_data, previous_data, sync, meta)
            logger.error(
                '%s\nCQRS create error: pk = %s (%s).', err, quote_for_log(pk), model.CQRS_ID
            )
            return None

    def update_instance(
        self,
        instance: ReplicaMixin,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: Any = None,
    ) -> Any:
        model = self.model
        new = mapped_data['cqrs_revision']
        alias = router.db_for_write(model)
        for _ in range(_CAS_ATTEMPTS):
            if not self._revision_allows(instance, new, sync):
                return instance
            pk = instance.pk  # before a hook may change it
            try:
                if not convergence.compare_and_set_ok(model):
                    kwargs = _hook_kwargs(model, previous_data, meta)
                    return instance.cqrs_update(sync, mapped_data, **kwargs)
                written = convergence.update_if_older(
                    model, instance, mapped_data, new, sync=sync, using=alias
                )
            except (Error, ValidationError) as err:
                logger.error(
                    '%s\nCQRS update error: pk = %s, cqrs_revision = %s (%s).',
                    err,
                    pk,
                    new,
                    model.CQRS_ID,
                )
                return None
            if written:
                return instance
            # Another worker changed (or deleted) the row since it was read: look again.
            current = self._current_row(instance.pk)
            if current is None:
                return self._create_missing(mapped_data, previous_data, sync, meta)
            instance = current
        return instance

    def _revision_allows(self, instance: Any, new: int, sync: bool) -> bool:
        """The original's revision rules and log lines: whether ``new`` may replace the row."""
        return revision_allows(
            self.model.CQRS_ID, instance.pk, instance.cqrs_revision, new, sync, None
        )

    def delete_instance(self, master_data: dict[str, Any]) -> bool:
        """Delete the row of a DELETE message unless the row is newer than the delete.

        A missing row counts as deleted. Either way a tombstone keeps the delete's revision,
        so that a late SAVE of an older state does not create the row again. The delete and its
        tombstone commit together or not at all (a savepoint inside a caller's transaction,
        else a transaction of their own).
        """
        model = self.model
        cqrs_id = model.CQRS_ID
        if 'id' not in master_data:
            logger.error('CQRS PK is not provided in data (%s).', cqrs_id)
            return False
        if not all(key in master_data for key in REVISION_FIELDS):
            logger.error('CQRS sync fields are not provided in data (%s).', cqrs_id)
            return False
        pk = master_data['id']
        revision = master_data['cqrs_revision']
        usable_id = pk is not None and not isinstance(pk, (bool, dict, list))  # a JSON scalar
        if not usable_id or not isinstance(revision, int) or isinstance(revision, bool):
            # Never an unchecked delete: without both, neither the row's revision can be
            # compared nor a tombstone written.
            logger.error(
                'CQRS delete is not applied, pk or cqrs_revision is not usable: '
                'pk = %.100r, cqrs_revision = %.100r (%s).',
                pk,
                revision,
                cqrs_id,
            )
            return False
        deleted_at = master_time(master_data['cqrs_updated'])
        alias = router.db_for_write(model)
        try:
            with transaction.atomic(using=alias):
                self._delete_row(pk, revision, deleted_at, alias)
        except Error as err:
            logger.error('%s\nCQRS delete error: pk = %s (%s).', err, pk, cqrs_id)
            return False
        finally:
            rowlocks.release_ended(connections[alias])  # MariaDB/MySQL, after a rollback
        return True

    def _delete_row(self, pk: Any, revision: int, deleted_at: Any, alias: str) -> None:
        model = self.model
        tombstones.lock_row(model, pk, alias)
        queryset = model._default_manager.filter(**{plan_for(model).pk_name: pk}).order_by()
        row = queryset.select_for_update().values_list('cqrs_revision', 'cqrs_updated').first()
        if row is not None and not tombstones.not_newer(row[0], row[1], revision, deleted_at):
            logger.warning(
                'CQRS delete is older than the row, the row is kept: pk = %s, '
                'cqrs_revision = delete %s / existing %s (%s).',
                pk,
                revision,
                row[0],
                model.CQRS_ID,
            )
            return
        if row is not None:
            queryset.delete()
        tombstones.record(model, pk, revision, deleted_at, alias)

    def _map_save_data(
        self, master_data: dict[str, Any], lines: LogLines | None = None
    ) -> dict[str, Any] | None:
        model = self.model
        cqrs_id = model.CQRS_ID
        if not all(key in master_data for key in REVISION_FIELDS):
            log(lines, logging.ERROR, 'CQRS sync fields are not provided in data (%s).', cqrs_id)
            return None
        mapping = model.CQRS_MAPPING
        if mapping is None:
            data = master_data
        else:
            data = {key: master_data[key] for key in REVISION_FIELDS}
            for master_name, replica_name in mapping.items():
                if master_name not in master_data:
                    log(
                        lines,
                        logging.ERROR,
                        'Bad master-replica mapping for %s (%s).',
                        master_name,
                        cqrs_id,
                    )
                    return None
                data[replica_name] = master_data[master_name]
        plan = plan_for(model)
        if plan.pk_name not in data:
            log(lines, logging.ERROR, 'CQRS PK is not provided in data (%s).', cqrs_id)
            return None
        _check_pk(model, plan.pk_name, data[plan.pk_name])
        if model.CQRS_CUSTOM_SERIALIZATION:
            return data
        names = plan.field_names
        data = {key: value for key, value in data.items() if key in names}
        if not all(name in data for name in plan.required):
            log(
                lines,
                logging.ERROR,
                'Not all required CQRS fields are provided in data (%s).',
                cqrs_id,
            )
            return None
        return data

    def _map_previous_data(self, previous_data: dict[str, Any] | None) -> dict[str, Any] | None:
        if not previous_data:
            return None
        model = self.model
        mapping = model.CQRS_MAPPING
        if mapping is None:
            return previous_data
        names = plan_for(model).field_names
        mapped = {mapping[key]: value for key, value in previous_data.items() if key in mapping}
        return {key: value for key, value in mapped.items() if key in names}


def _hook_kwargs(model: Any, previous_data: dict[str, Any] | None, meta: Any) -> dict[str, Any]:
    """The original's hook arguments: ``meta`` only for models with ``CQRS_META``."""
    if model.CQRS_META:
        return {'previous_data': previous_data, 'meta': meta}
    return {'previous_data': previous_data}


def _check_pk(model: Any, pk_name: str, value: Any) -> None:
    """Raise :class:`UnusablePayloadError` unless ``value`` names exactly one row of ``model``.

    A null pk would let the database choose the key (a phantom row); ``1.5`` or ``true`` would
    be coerced into another row's key; text that the pk field cannot read (``"abc"`` for an
    integer pk) can never apply either.
    """
    if not usable_pk(value):
        kind = 'null' if value is None else type(value).__name__
        raise UnusablePayloadError(f'pk {pk_name!r} must be an integer or a string, got {kind}')
    try:
        model._meta.pk.to_python(value)
    except ValidationError as err:
        raise UnusablePayloadError(
            f'pk {pk_name!r} is not a valid {model._meta.pk.get_internal_type()}: '
            f'{quote_for_log(value)!r}'
        ) from err
