"""The batched apply's prepared-statement writes store exactly what one-by-one apply stores."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from dj_cqrs.consumer.batch import Delivery, apply_batch
from dj_cqrs.consumer.handler import Action
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.replica import writes
from tests.dj_replica.models import (
    AuthorReplica,
    CustomPKReplica,
    GoldenBasicReplica,
    GoldenTimeReplica,
    GoldenUUIDReplica,
)

UPDATED = '2024-05-01T10:00:00.123456+00:00'
LATER = '2024-05-01T10:00:05+00:00'
UIDS = [str(uuid.UUID(int=n)) for n in range(1, 5)]


def body(cqrs_id, pk, revision, updated=UPDATED, **fields):
    data = {'id': pk, 'cqrs_revision': revision, 'cqrs_updated': updated, **fields}
    payload = TransportPayload('SAVE', cqrs_id, data, pk, correlation_id=f'c{pk}')
    return Delivery(payload.encode(), cqrs_id)


def basic(pk, revision, updated=UPDATED, **changes):
    fields = {
        'char': f'c{pk}',
        'text': 'long text',
        'flag': pk % 2 == 0,
        'integer': pk,
        'big': 2**40 + pk,
        'amount': '12.30',
        'ratio': 0.25,
        'day': '2024-02-29',
        'moment': '2024-05-01T10:00:00.5+02:00',
        'uid': UIDS[pk % 4],
        'payload': {'a': [1, 2, {'b': None}], 'pk': pk},
        'optional': None,
        'parent': None,
        **changes,
    }
    return body('golden_basic', pk, revision, updated, **fields)


def deliveries():
    return [
        basic(1, 0),
        basic(2, 0),
        body('golden_time', 1, 0, name='t', at='10:11:12.5', took='P1DT02H00M00S', exact=1.5),
        body('golden_uuid', UIDS[0], 0, name='u'),
        body('custom_pk', 'A-1', 0, code='A-1', name='x'),
        body('author', 1, 0, name='a', publisher=7),
        basic(1, 1, LATER, char='changed', amount='0.01', payload=[1]),
        basic(3, 0),
        basic(3, 2, LATER, flag=True, optional='set'),  # a lost revision: still applied
        basic(2, 0, char='duplicate'),  # a duplicate: ignored
        body('golden_time', 1, 1, name='t2', at='23:59:59', took=None, blob='AAEC', exact=None),
        body('golden_uuid', UIDS[0], 1, name='u2'),
        body('custom_pk', 'A-1', 1, code='A-1', name='y'),
        body('author', 1, 1, name='b', publisher=None),
    ]


MODELS = (GoldenBasicReplica, GoldenTimeReplica, GoldenUUIDReplica, CustomPKReplica, AuthorReplica)


def stored():
    """Every column as the database holds it (no Django conversion on the way out)."""
    result = {}
    with connection.cursor() as cursor:
        for model in MODELS:
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(f'SELECT * FROM {table} ORDER BY 1')
            result[model.__name__] = cursor.fetchall()
    return result


def clear():
    for model in MODELS:
        model.objects.all().delete()


@pytest.mark.django_db(transaction=True)
def test_prepared_writes_store_what_one_by_one_stores(batch_size):
    """Creates and updates of many field types: the same stored values both ways."""
    assert writes.table_for(GoldenBasicReplica, connection) is not None  # prepared statements
    assert writes.table_for(GoldenTimeReplica, connection) is None  # binary: Django's bulk methods
    batch_size(100)
    outcomes = apply_batch(deliveries())
    assert [o.action for o in outcomes] == [Action.ACK] * len(outcomes)
    batched = stored()

    clear()
    batch_size(1)
    assert [o.action for o in apply_batch(deliveries())] == [Action.ACK] * len(outcomes)
    assert stored() == batched
    assert GoldenBasicReplica.objects.get(id=3).cqrs_revision == 2
    assert GoldenBasicReplica.objects.get(id=2).char == 'c2'


@pytest.mark.django_db(transaction=True)
def test_updates_in_a_later_batch_store_the_last_revision(batch_size):
    """Rows that exist before the batch are updated with one statement per column set."""
    batch_size(100)
    apply_batch([basic(pk, 0) for pk in range(1, 6)])
    outcomes = apply_batch(
        [basic(pk, 1, char=f'n{pk}') for pk in range(1, 6)]
        + [basic(2, 2, amount='99.99'), basic(4, 1, char='dup')]
    )
    assert [o.action for o in outcomes] == [Action.ACK] * 7
    rows = {
        r.id: (r.char, r.cqrs_revision, str(r.amount)) for r in GoldenBasicReplica.objects.all()
    }
    assert rows == {
        1: ('n1', 1, '12.30'),
        2: ('c2', 2, '99.99'),  # the last message carries every field
        3: ('n3', 1, '12.30'),
        4: ('n4', 1, '12.30'),
        5: ('n5', 1, '12.30'),
    }


@pytest.mark.django_db(transaction=True)
def test_a_value_the_field_rejects_fails_alone():
    """A bad value fails its own message (retry); the rest of the batch is applied."""
    outcomes = apply_batch([basic(1, 0), basic(2, 0, day='not a day'), basic(3, 0)])
    assert [o.action for o in outcomes] == [Action.ACK, Action.RETRY, Action.ACK]
    assert sorted(GoldenBasicReplica.objects.values_list('id', flat=True)) == [1, 3]


@pytest.mark.django_db(transaction=True)
def test_missing_columns_get_their_model_defaults():
    """A create without an optional column stores the field default, as Model(**data) does."""
    outcomes = apply_batch(
        [basic(1, 0, optional=None), body('golden_time', 2, 0, name='n', at='01:02:03')]
    )
    assert [o.action for o in outcomes] == [Action.ACK, Action.ACK]
    row = GoldenTimeReplica.objects.get(id=2)
    assert (row.took, row.blob, row.exact) == (None, None, None)


@pytest.mark.django_db(transaction=True)
def test_large_batches_are_written_in_chunks(monkeypatch, batch_size):
    """A batch larger than one statement's parameters is split, every row still written."""
    monkeypatch.setattr(writes, 'PG_MAX_PARAMS', 40)  # 2 rows per INSERT on PostgreSQL
    monkeypatch.setattr(writes, 'IN_CHUNK', 3)  # 3 pks per read
    monkeypatch.setattr(writes, 'IN_CHUNK_UNLIMITED', 3)
    batch_size(100)
    apply_batch([basic(pk, 0) for pk in range(1, 8)])
    outcomes = apply_batch([basic(pk, 1, char=f'n{pk}') for pk in range(1, 11)])
    assert [o.action for o in outcomes] == [Action.ACK] * 10
    rows = GoldenBasicReplica.objects.values_list('id', 'char', 'cqrs_revision')
    assert sorted(rows) == [(pk, f'n{pk}', 1) for pk in range(1, 11)]
