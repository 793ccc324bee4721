"""``ReplicaManager``: the revision rules that decide whether a message changes a row."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import Error, models

from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.replica.plan import REVISION_FIELDS, plan_for

logger = logging.getLogger(LOGGER_NAME)


class ReplicaManager(models.Manager):
    """``Model.cqrs`` on replicas: maps message data and applies it under the revision rules."""

    def save_instance(
        self,
        master_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: Any = None,
    ) -> Any:
        """Create or update the row of a SAVE/SYNC message; falsy result = failure."""
        mapped = self._map_save_data(master_data)
        if mapped is None:
            return None
        previous_data = self._map_previous_data(previous_data)
        model = self.model
        pk_name = plan_for(model).pk_name
        queryset = model._default_manager.filter(**{pk_name: mapped[pk_name]}).order_by()
        if model.CQRS_SELECT_FOR_UPDATE:
            queryset = queryset.select_for_update()
        instance = queryset.first()
        if instance is None:
            return self.create_instance(mapped, previous_data, sync, meta)
        return self.update_instance(instance, mapped, previous_data, sync, meta)

    def create_instance(
        self,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: Any = None,
    ) -> Any:
        model = self.model
        kwargs: dict[str, Any] = {'previous_data': previous_data}
        if model.CQRS_META:
            kwargs['meta'] = meta
        try:
            return model.cqrs_create(sync, mapped_data, **kwargs)
        except (Error, ValidationError) as err:
            pk = mapped_data.get(plan_for(model).pk_name)
            logger.error('%s\nCQRS create error: pk = %s (%s).', err, pk, model.CQRS_ID)
            return None

    def update_instance(
        self,
        instance: models.Model,
        mapped_data: dict[str, Any],
        previous_data: dict[str, Any] | None = None,
        sync: bool = False,
        meta: Any = None,
    ) -> Any:
        model = self.model
        cqrs_id = model.CQRS_ID
        pk = instance.pk
        new = mapped_data['cqrs_revision']
        existing = instance.cqrs_revision
        if sync:
            if existing > new:
                logger.warning(
                    'CQRS revision downgrade on sync: pk = %s, '
                    'cqrs_revision = new %s / existing %s (%s).',
                    pk,
                    new,
                    existing,
                    cqrs_id,
                )
        else:
            if existing > new:
                logger.error(
                    'Wrong CQRS sync order: pk = %s, cqrs_revision = new %s / existing %s (%s).',
                    pk,
                    new,
                    existing,
                    cqrs_id,
                )
                return instance
            if existing == new:
                logger.error(
                    'Received duplicate CQRS data: pk = %s, cqrs_revision = %s (%s).',
                    pk,
                    new,
                    cqrs_id,
                )
                if new == 0:
                    logger.warning(
                        'CQRS potential creation race condition: pk = %s (%s).', pk, cqrs_id
                    )
                return instance
            if new != existing + 1:
                logger.warning(
                    'Lost or filtered out %s CQRS packages: pk = %s, cqrs_revision = %s (%s)',
                    new - existing - 1,
                    pk,
                    new,
                    cqrs_id,
                )
        kwargs: dict[str, Any] = {'previous_data': previous_data}
        if model.CQRS_META:
            kwargs['meta'] = meta
        try:
            return instance.cqrs_update(sync, mapped_data, **kwargs)
        except (Error, ValidationError) as err:
            logger.error(
                '%s\nCQRS update error: pk = %s, cqrs_revision = %s (%s).',
                err,
                pk,
                new,
                cqrs_id,
            )
            return None

    def delete_instance(self, master_data: dict[str, Any]) -> bool:
        """Delete the row of a DELETE message (a missing row counts as deleted)."""
        model = self.model
        cqrs_id = model.CQRS_ID
        if 'id' not in master_data:
            logger.error('CQRS PK is not provided in data (%s).', cqrs_id)
            return False
        if not all(key in master_data for key in REVISION_FIELDS):
            logger.error('CQRS sync fields are not provided in data (%s).', cqrs_id)
            return False
        pk = master_data['id']
        pk_name = plan_for(model).pk_name
        try:
            model._default_manager.filter(**{pk_name: pk}).delete()
        except Error as err:
            logger.error('%s\nCQRS delete error: pk = %s (%s).', err, pk, cqrs_id)
            return False
        return True

    def _map_save_data(self, master_data: dict[str, Any]) -> dict[str, Any] | None:
        model = self.model
        cqrs_id = model.CQRS_ID
        if not all(key in master_data for key in REVISION_FIELDS):
            logger.error('CQRS sync fields are not provided in data (%s).', cqrs_id)
            return None
        mapping = model.CQRS_MAPPING
        if mapping is None:
            data = master_data
        else:
            data = {key: master_data[key] for key in REVISION_FIELDS}
            for master_name, replica_name in mapping.items():
                if master_name not in master_data:
                    logger.error('Bad master-replica mapping for %s (%s).', master_name, cqrs_id)
                    return None
                data[replica_name] = master_data[master_name]
        plan = plan_for(model)
        if plan.pk_name not in data:
            logger.error('CQRS PK is not provided in data (%s).', cqrs_id)
            return None
        if model.CQRS_CUSTOM_SERIALIZATION:
            return data
        names = plan.field_names
        data = {key: value for key, value in data.items() if key in names}
        if not all(name in data for name in plan.required):
            logger.error('Not all required CQRS fields are provided in data (%s).', cqrs_id)
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
        mapped = {
            mapping[key]: value for key, value in previous_data.items() if key in mapping
        }
        return {key: value for key, value in mapped.items() if key in names}
