"""What master saves put into messages: fields, serializers, tracked fields, meta, bulk ops."""

import datetime
import decimal

import pytest
from django.db import transaction

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.utils import bulk_relate_cqrs_serialization
from tests.dj_master.models import (
    Author,
    GoldenFields,
    GoldenParent,
    GoldenSerialized,
    Publisher,
)
from tests.dj_replica.models import GoldenParentReplica, GoldenSerializedReplica

pytestmark = pytest.mark.django_db(transaction=True)


def bodies(published, cqrs_id=None):
    return [b for _, b in published() if cqrs_id is None or b['cqrs_id'] == cqrs_id]


def test_fields_follow_model_order_and_cqrs_fields_append_revision(published):
    """instance_data: every concrete field in model order; CQRS_FIELDS only those + revisions."""
    GoldenParent.objects.create(id=1, name='p')
    GoldenFields.objects.create(id=1, title='t', amount=1, secret='s', note='n')
    parent, fields = bodies(published)
    assert list(parent['instance_data']) == ['cqrs_revision', 'cqrs_updated', 'id', 'name']
    assert list(fields['instance_data']) == [
        'id', 'title', 'amount', 'cqrs_revision', 'cqrs_updated']


def test_tracked_fields_previous_data_on_create_update_and_untracked_change(published):
    """previous_data: nulls of set fields on create, old values on update, {} if untracked."""
    obj = GoldenFields.objects.create(id=1, title='t', amount=1, secret='s')
    obj.title, obj.secret = 't2', 's2'
    obj.save()
    obj.note = 'untracked'
    obj.save()
    created, updated, untracked = bodies(published)
    assert created['previous_data'] == {'title': None, 'secret': None}
    assert updated['previous_data'] == {'title': 't', 'secret': 's'}
    assert untracked['previous_data'] == {}


def test_foreign_key_previous_data_uses_attname_on_create_and_name_on_update(published):
    """FK keys in previous_data: parent_id on create, parent on update (as the original)."""
    pub1 = Publisher.objects.create(name='a')
    pub2 = Publisher.objects.create(name='b')
    author = Author.objects.create(name='x', publisher=pub1)
    author.publisher = pub2
    author.save()
    created, updated = bodies(published, 'author')
    assert created['previous_data'] == {'name': None, 'publisher_id': None}
    assert updated['previous_data'] == {'publisher': pub1.id}
    assert updated['instance_data']['publisher'] == pub2.id


def test_serializer_output_with_revision_fields(published):
    """CQRS_SERIALIZER output is sent with cqrs_revision/cqrs_updated appended."""
    GoldenParent.objects.create(id=1, name='Parent ü/1')
    GoldenSerialized.objects.create(
        id=1, name='Sér/ialized', price=decimal.Decimal('5.5'),
        happened=datetime.datetime(2023, 7, 14, 8, 30, 0, 500, tzinfo=datetime.timezone.utc),
        parent_id=1)
    data = bodies(published, 'golden_serialized')[0]['instance_data']
    assert data == {
        'id': 1, 'name': 'Sér/ialized', 'price': '5.500',
        'happened': '2023-07-14T08:30:00.000500Z', 'parent': 1,
        'parent_name': 'Parent ü/1', 'tags': ['golden', 'ü/x', 11],
        'cqrs_revision': 0, 'cqrs_updated': data['cqrs_updated'],
    }
    assert GoldenSerializedReplica.objects.get(id=1).title == 'Sér/ialized'


def test_bulk_relate_never_serves_stale_rows(published):
    """Inside bulk_relate_cqrs_serialization several transactions publish their own state."""
    GoldenParent.objects.create(id=1, name='p')
    with bulk_relate_cqrs_serialization():
        with transaction.atomic():
            objs = [
                GoldenSerialized.objects.create(
                    id=i, name=f'n{i}', price=1, happened=datetime.datetime(
                        2024, 1, 1, tzinfo=datetime.timezone.utc), parent_id=1)
                for i in range(1, 4)
            ]
        for obj in objs:
            with transaction.atomic():
                obj.name = f'{obj.name}-v2'
                obj.save()
    names = [b['instance_data']['name'] for b in bodies(published, 'golden_serialized')]
    assert names == ['n1', 'n2', 'n3', 'n1-v2', 'n2-v2', 'n3-v2']
    assert GoldenSerializedReplica.objects.get(id=2).title == 'n2-v2'


def test_bulk_create_publishes_each_row(published):
    """cqrs.bulk_create sends one SAVE per created row with insert-form previous_data."""
    GoldenParent.cqrs.bulk_create([GoldenParent(id=10, name='a'), GoldenParent(id=11, name='b')])
    saves = bodies(published)
    assert [b['instance_pk'] for b in saves] == [10, 11]
    assert saves[0]['previous_data'] == {'name': None}
    assert GoldenParentReplica.objects.count() == 2


def test_bulk_update_bumps_revision_and_sends_full_snapshot(published):
    """cqrs.bulk_update: +1 per row, one SAVE each, previous_data = all tracked fields before."""
    GoldenParent.cqrs.bulk_create([GoldenParent(id=10, name='a'), GoldenParent(id=11, name='b')])
    count = GoldenParent.cqrs.bulk_update(GoldenParent.objects.filter(id__in=[10, 11]),
                                          name='renamed')
    assert count == 2
    updates = bodies(published)[2:]
    assert [(b['instance_pk'], b['instance_data']['cqrs_revision']) for b in updates] == [
        (10, 1), (11, 1)]
    assert {b['previous_data']['name'] for b in updates} == {'a', 'b'}
    assert set(GoldenParentReplica.objects.values_list('name', flat=True)) == {'renamed'}
    assert GoldenParent.cqrs.bulk_update(GoldenParent.objects.filter(id=999), name='x') is None


def test_meta_and_correlation_functions(settings, published):
    """meta_function gets instance_data/previous_data/signal_type; the correlation id is set."""
    settings.CQRS = {**settings.CQRS, 'master': {
        'meta_function': 'tests.hooks.meta_function',
        'correlation_function': 'tests.hooks.correlation_function',
    }}
    obj = GoldenParent.objects.create(id=1, name='a')
    obj.cqrs_sync(queue='replica')
    obj.delete()
    save, sync, delete = bodies(published)
    assert save['meta'] == {'from': 'tests', 'signal_type': 'SAVE'}
    assert save['correlation_id'] == 'corr:SAVE:golden_parent:1:None'
    assert sync['correlation_id'] == 'corr:SYNC:golden_parent:1:replica'
    assert delete['meta'] == {'from': 'tests', 'signal_type': 'DELETE'}


def test_default_meta_is_empty_and_correlation_null(published):
    """Without functions: meta {} and correlation_id null, as the original."""
    GoldenParent.objects.create(id=1, name='a')
    assert bodies(published)[0]['meta'] == {}
    assert bodies(published)[0]['correlation_id'] is None


def test_cqrs_sync_returns_whether_it_published(published):
    """cqrs_sync: False for unsaved or deleted rows, True when a SYNC was sent."""
    assert GoldenParent(id=5, name='x').cqrs_sync() is False
    obj = GoldenParent.objects.create(id=1, name='a')
    GoldenParent.objects.filter(id=1).update(name='changed in db')
    assert obj.cqrs_sync() is True
    assert GoldenParentReplica.objects.get(id=1).name == 'changed in db'
    GoldenParent.objects.filter(id=1).delete()
    assert obj.cqrs_sync() is False


def test_payload_round_trips_through_the_wire():
    """to_dict keeps the original's key order; decode(encode(p)) gives the same payload."""
    payload = TransportPayload('SAVE', 'x', {'id': 1}, 1, previous_data={'a': None}, retries=2)
    assert list(payload.to_dict()) == [
        'signal_type', 'cqrs_id', 'instance_data', 'previous_data', 'instance_pk',
        'correlation_id', 'retries', 'expires', 'meta']
    again = TransportPayload.decode(payload.encode())
    assert again.to_dict() == payload.to_dict()
    with pytest.raises(ValueError, match='0 or positive integer'):
        payload.retries = -1


def test_malformed_expires_never_raises_and_keeps_the_message(cqrs_log):
    """A malformed expires is logged and replaced by the default TTL; decoding goes on."""
    payload = TransportPayload.from_message(
        {'signal_type': 'SAVE', 'cqrs_id': 'x', 'instance_data': {}, 'expires': 'not a date'})
    assert payload.expires is not None and not payload.is_expired()
    assert any('malformed expires' in line for line in cqrs_log())
