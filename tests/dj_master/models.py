"""Master models of the test project (the golden project's models and a few more)."""

import uuid

from django.db import models

from dj_cqrs.metas import MasterMeta
from dj_cqrs.mixins import MasterMixin, RawMasterMixin


class GoldenParent(MasterMixin):
    CQRS_ID = 'golden_parent'
    CQRS_TRACKED_FIELDS = ['name']

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class GoldenBasic(MasterMixin):
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
    CQRS_ID = 'golden_serialized'
    CQRS_SERIALIZER = 'tests.dj_master.serializers.GoldenSerializedSerializer'

    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=3)
    happened = models.DateTimeField()
    parent = models.ForeignKey(GoldenParent, on_delete=models.CASCADE)

    @classmethod
    def relate_cqrs_serialization(cls, queryset):
        return queryset.select_related('parent')


class GoldenUUID(MasterMixin):
    CQRS_ID = 'golden_uuid'

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)


class GoldenFields(MasterMixin):
    CQRS_ID = 'golden_fields'
    CQRS_FIELDS = ['id', 'title', 'amount']
    CQRS_TRACKED_FIELDS = ['title', 'secret']

    title = models.CharField(max_length=100)
    amount = models.IntegerField(default=0)
    secret = models.CharField(max_length=100, default='')
    note = models.TextField(default='')

    def get_custom_cqrs_delete_data(self):
        return {'title': self.title, 'reason': 'golden/delete ü'}


class GoldenTime(MasterMixin):
    """Field types the original could not send (TypeError at commit)."""

    CQRS_ID = 'golden_time'

    name = models.CharField(max_length=100)
    at = models.TimeField()
    took = models.DurationField(null=True)
    blob = models.BinaryField(null=True)
    exact = models.DecimalField(max_digits=30, decimal_places=20, null=True)


class GoldenFail(MasterMixin):
    CQRS_ID = 'golden_fail'

    name = models.CharField(max_length=100)


class Author(MasterMixin):
    CQRS_ID = 'author'
    CQRS_TRACKED_FIELDS = ['name', 'publisher']

    name = models.CharField(max_length=100)
    publisher = models.ForeignKey('Publisher', null=True, on_delete=models.SET_NULL)


class Publisher(MasterMixin):
    CQRS_ID = 'publisher'

    name = models.CharField(max_length=100)


class Book(MasterMixin):
    CQRS_ID = 'book'

    title = models.CharField(max_length=100)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)


class ProxyParent(GoldenParent):
    class Meta:
        proxy = True


class Silent(MasterMixin):
    CQRS_ID = 'silent'
    CQRS_PRODUCE = False

    name = models.CharField(max_length=100)


class Filtered(MasterMixin):
    CQRS_ID = 'filtered'

    name = models.CharField(max_length=100)
    public = models.BooleanField(default=True)

    def is_sync_instance(self):
        return self.public


class Tree(models.Model):
    """Stands for a third-party base class in diamond inheritance."""

    label = models.CharField(max_length=100)

    class Meta:
        abstract = True


class RawTree(Tree, RawMasterMixin):
    CQRS_ID = 'raw_tree'


MasterMeta.register(RawTree)


class CustomPK(MasterMixin):
    CQRS_ID = 'custom_pk'

    code = models.CharField(max_length=20, primary_key=True)
    name = models.CharField(max_length=100)


class DirectOnly(MasterMixin):
    CQRS_ID = 'direct_only'

    name = models.CharField(max_length=100)


class Counter(MasterMixin):
    """Plain model used by concurrency and batching tests."""

    CQRS_ID = 'counter'

    value = models.IntegerField(default=0)


class Plain(models.Model):
    """A model without CQRS (baseline)."""

    value = models.IntegerField(default=0)
