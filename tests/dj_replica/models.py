"""Replica models of the test project (the golden project's replicas and a few more)."""

import uuid

from django.db import models

from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin, ReplicaMixin


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


class GoldenTimeReplica(ReplicaMixin):
    CQRS_ID = 'golden_time'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    at = models.TimeField()
    took = models.DurationField(null=True)
    blob = models.BinaryField(null=True)
    exact = models.DecimalField(max_digits=30, decimal_places=20, null=True)


class GoldenFailReplica(ReplicaMixin):
    CQRS_ID = 'golden_fail'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        raise RuntimeError('golden deliberate replica failure')


class PublisherReplica(ReplicaMixin):
    CQRS_ID = 'publisher'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class AuthorReplica(ReplicaMixin):
    """A replica with a real ForeignKey, filled from the raw id in the message."""

    CQRS_ID = 'author'
    CQRS_SELECT_FOR_UPDATE = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    publisher = models.ForeignKey(
        PublisherReplica, null=True, on_delete=models.SET_NULL, db_constraint=False
    )


class BookReplica(ReplicaMixin):
    """Custom serialization: the hook receives the message data unfiltered."""

    CQRS_ID = 'book'
    CQRS_CUSTOM_SERIALIZATION = True

    id = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=100)
    author_name = models.CharField(max_length=100)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        author = AuthorReplica.objects.filter(pk=mapped_data['author']).first()
        return cls.objects.create(
            id=mapped_data['id'],
            title=mapped_data['title'],
            author_name=author.name if author else '',
            cqrs_revision=mapped_data['cqrs_revision'],
            cqrs_updated=mapped_data['cqrs_updated'],
        )

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        self.title = mapped_data['title']
        self.cqrs_revision = mapped_data['cqrs_revision']
        self.cqrs_updated = mapped_data['cqrs_updated']
        self.save()
        return self


class CustomPKReplica(ReplicaMixin):
    CQRS_ID = 'custom_pk'

    code = models.CharField(max_length=20, primary_key=True)
    name = models.CharField(max_length=100)


class DirectOnlyReplica(ReplicaMixin):
    CQRS_ID = 'direct_only'
    CQRS_ONLY_DIRECT_SYNCS = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class CounterReplica(ReplicaMixin):
    CQRS_ID = 'counter'

    id = models.IntegerField(primary_key=True)
    value = models.IntegerField()


class FilteredReplica(ReplicaMixin):
    CQRS_ID = 'filtered'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    public = models.BooleanField()


class RawTreeReplica(ReplicaMixin):
    CQRS_ID = 'raw_tree'

    id = models.IntegerField(primary_key=True)
    label = models.CharField(max_length=100)


MEMORY_STORE = {}


class MemoryReplica(ReplicaMixin):
    """A DB-less replica: an abstract model with its own storage."""

    CQRS_ID = 'silent_memory'
    CQRS_NO_DB_OPERATIONS = True
    CQRS_META = True

    class Meta:
        abstract = True

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False, meta=None):
        MEMORY_STORE[master_data['id']] = (master_data, meta, sync)
        return True

    @classmethod
    def cqrs_delete(cls, master_data, meta=None):
        return MEMORY_STORE.pop(master_data['id'], None) is not None


class EventLog(RawReplicaMixin):
    """A consumer that is not a model, registered by hand."""

    CQRS_ID = 'event_log'
    events = []

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False, meta=None):
        cls.events.append(('save', master_data, sync))
        return True

    @classmethod
    def cqrs_delete(cls, master_data, meta=None):
        cls.events.append(('delete', master_data))
        return True


ReplicaMeta.register(EventLog)


class StampField(models.CharField):
    """Computes its value on every save, as django-model-utils' AutoLastModifiedField does."""

    def pre_save(self, model_instance, add):
        value = f'{model_instance.name}@{model_instance.cqrs_revision}'
        setattr(model_instance, self.attname, value)
        return value


class StampedReplica(ReplicaMixin):
    """A plain replica with a field whose ``pre_save()`` computes the stored value."""

    CQRS_ID = 'stamped'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    stamp = StampField(max_length=200, null=True)
