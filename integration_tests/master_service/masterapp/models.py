"""Master models of the integration master service.

The ``golden_*`` models have the golden project's CQRS_IDs and fields (see the spec's
golden/README.md), so golden messages and ours can be compared; the ``it_*`` models cover the
cases the golden project does not (non-``id`` primary key, direct syncs, custom serialization).
"""

import uuid

from django.db import models

from dj_cqrs.mixins import MasterMixin


class GoldenParent(MasterMixin):
    """Hand-set integer pk, tracked ``name``."""

    CQRS_ID = 'golden_parent'
    CQRS_TRACKED_FIELDS = ['name']

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class GoldenBasic(MasterMixin):
    """Every common field type and a ForeignKey; all fields tracked."""

    CQRS_ID = 'golden_basic'
    CQRS_TRACKED_FIELDS = '__all__'

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
    parent = models.ForeignKey(GoldenParent, null=True, on_delete=models.SET_NULL)


class GoldenSerialized(MasterMixin):
    """Serialized with a DRF serializer."""

    CQRS_ID = 'golden_serialized'
    CQRS_SERIALIZER = 'masterapp.serializers.GoldenSerializedSerializer'

    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=3)
    happened = models.DateTimeField()
    parent = models.ForeignKey(GoldenParent, on_delete=models.CASCADE)

    @classmethod
    def relate_cqrs_serialization(cls, queryset):
        return queryset.select_related('parent')


class GoldenUUID(MasterMixin):
    """UUID primary key."""

    CQRS_ID = 'golden_uuid'

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)


class GoldenFields(MasterMixin):
    """``CQRS_FIELDS`` subset, tracked fields, custom delete data."""

    CQRS_ID = 'golden_fields'
    CQRS_FIELDS = ['id', 'title', 'amount']
    CQRS_TRACKED_FIELDS = ['title', 'secret']

    title = models.CharField(max_length=100)
    amount = models.IntegerField(default=0)
    secret = models.CharField(max_length=100, default='')
    note = models.TextField(default='')

    def get_custom_cqrs_delete_data(self):
        return {'title': self.title, 'reason': 'golden/delete ü'}


class GoldenFail(MasterMixin):
    """Its replica fails (see replicaapp)."""

    CQRS_ID = 'golden_fail'

    name = models.CharField(max_length=100)


class Coded(MasterMixin):
    """A primary key that is not called ``id``."""

    CQRS_ID = 'it_coded'

    code = models.CharField(max_length=20, primary_key=True)
    name = models.CharField(max_length=100)


class Direct(MasterMixin):
    """Its replica only applies syncs addressed to its queue."""

    CQRS_ID = 'it_direct'

    name = models.CharField(max_length=100)


class Custom(MasterMixin):
    """Its replica uses custom serialization."""

    CQRS_ID = 'it_custom'

    name = models.CharField(max_length=100)
    quantity = models.IntegerField(default=0)


class Slow(MasterMixin):
    """Its replica takes a while to apply (heartbeat tests)."""

    CQRS_ID = 'it_slow'

    name = models.CharField(max_length=100)
