"""Replica models of the integration replica service (see masterapp for the masters)."""

import os
import uuid

from django.db import models

from dj_cqrs.mixins import ReplicaMixin


class GoldenParentReplica(ReplicaMixin):
    CQRS_ID = 'golden_parent'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class GoldenBasicReplica(ReplicaMixin):
    CQRS_ID = 'golden_basic'

    id = models.IntegerField(primary_key=True)
    char = models.CharField(max_length=200)
    text = models.TextField()
    flag = models.BooleanField()
    integer = models.IntegerField()
    big = models.BigIntegerField()
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    ratio = models.FloatField()
    day = models.DateField()
    moment = models.DateTimeField()
    uid = models.UUIDField()
    payload = models.JSONField()
    optional = models.CharField(max_length=50, null=True)
    parent = models.IntegerField(null=True)


class GoldenSerializedReplica(ReplicaMixin):
    """A mapped replica (``CQRS_MAPPING``): master ``name`` lands in ``title``."""

    CQRS_ID = 'golden_serialized'
    CQRS_MAPPING = {
        'id': 'id',
        'name': 'title',
        'price': 'price',
        'happened': 'happened',
        'parent_name': 'parent_name',
        'tags': 'tags',
    }

    id = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=3)
    happened = models.DateTimeField()
    parent_name = models.CharField(max_length=100)
    tags = models.JSONField()


class GoldenUUIDReplica(ReplicaMixin):
    CQRS_ID = 'golden_uuid'

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)


class GoldenFieldsReplica(ReplicaMixin):
    """Stores the meta, previous data and sync flag its hooks receive."""

    CQRS_ID = 'golden_fields'
    CQRS_META = True

    id = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=100)
    amount = models.IntegerField()
    last_meta = models.JSONField(null=True)
    last_previous = models.JSONField(null=True)
    last_sync = models.BooleanField(null=True)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        return cls.objects.create(
            **mapped_data, last_meta=meta, last_previous=previous_data, last_sync=sync
        )

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        self.last_meta, self.last_previous, self.last_sync = meta, previous_data, sync
        return super().cqrs_update(sync, mapped_data, previous_data=previous_data, meta=meta)


class GoldenFailReplica(ReplicaMixin):
    """Always fails, unless the worker runs with ``CQRS_IT_FIXED=1`` (the fix is deployed)."""

    CQRS_ID = 'golden_fail'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        if os.environ.get('CQRS_IT_FIXED') != '1':
            raise RuntimeError('golden deliberate replica failure')
        return super().cqrs_create(sync, mapped_data, previous_data=previous_data, meta=meta)


class CodedReplica(ReplicaMixin):
    CQRS_ID = 'it_coded'

    code = models.CharField(max_length=20, primary_key=True)
    name = models.CharField(max_length=100)


class DirectReplica(ReplicaMixin):
    """Applies only syncs addressed to this service's queue."""

    CQRS_ID = 'it_direct'
    CQRS_ONLY_DIRECT_SYNCS = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class CustomReplica(ReplicaMixin):
    """Custom serialization: the hooks get the message data unfiltered and keep a summary."""

    CQRS_ID = 'it_custom'
    CQRS_CUSTOM_SERIALIZATION = True

    id = models.IntegerField(primary_key=True)
    summary = models.CharField(max_length=200)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        return cls.objects.create(
            id=mapped_data['id'],
            summary=f'{mapped_data["name"]} x{mapped_data["quantity"]}',
            cqrs_revision=mapped_data['cqrs_revision'],
            cqrs_updated=mapped_data['cqrs_updated'],
        )

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        self.summary = f'{mapped_data["name"]} x{mapped_data["quantity"]}'
        self.cqrs_revision = mapped_data['cqrs_revision']
        self.cqrs_updated = mapped_data['cqrs_updated']
        self.save()
        return self


class SlowReplica(ReplicaMixin):
    """Applying takes ``CQRS_IT_SLOW`` seconds (env of the worker), like a heavy handler."""

    CQRS_ID = 'it_slow'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        import time

        time.sleep(float(os.environ.get('CQRS_IT_SLOW', '0')))
        return super().cqrs_create(sync, mapped_data, previous_data=previous_data, meta=meta)
