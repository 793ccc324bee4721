"""The batched apply and ``cqrs_bulk_load`` store exactly what one-by-one apply stores.

One body per case, run through the three write paths: the reference (one message at a time,
``handler.handle``), the batched apply and the bulk load, comparing the raw stored rows and the
revision rules' log lines. Run it on every database: ``DB=postgres`` / ``DB=mariadb``.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid

import pytest
from django.db import connection

from dj_cqrs.consumer import handler
from dj_cqrs.consumer.batch import Delivery, apply_batch
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.management.bulk_load import load
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.replica.writepath import default_write_path
from dj_cqrs.values import master_time
from tests.dj_replica.models import (
    AuthorReplica,
    CustomPKReplica,
    GoldenBasicReplica,
    GoldenFieldsReplica,
    GoldenParentReplica,
    GoldenTimeReplica,
    GoldenUUIDReplica,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Naive times are part of the cases: Django warns when it stores one (as UTC here).
    pytest.mark.filterwarnings('ignore:DateTimeField .* received a naive datetime'),
]

UPDATED = '2024-05-01 10:00:00.123456+00:00'
LATER = '2024-05-01T10:00:05Z'
UIDS = [str(uuid.UUID(int=n)) for n in range(1, 5)]
MODELS = (
    GoldenBasicReplica,
    GoldenTimeReplica,
    GoldenUUIDReplica,
    CustomPKReplica,
    AuthorReplica,
    GoldenFieldsReplica,
    GoldenParentReplica,
)


def save(cqrs_id, pk, revision, updated=UPDATED, **fields):
    return cqrs_id, {'id': pk, 'cqrs_revision': revision, 'cqrs_updated': updated, **fields}


def basic(pk, revision, updated=UPDATED, **changes):
    fields = {
        'char': f'c{pk}',
        'text': 'long text ü',
        'flag': pk % 2 == 0,
        'integer': -pk,
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
    return save('golden_basic', pk, revision, updated, **fields)


FIELD_TYPES = [
    basic(1, 0),
    basic(2, 0),
    save('golden_time', 1, 0, name='t', at='10:11:12.5', took='P1DT02H00M00S', exact=1.5),
    save('golden_uuid', UIDS[0], 0, name='u'),
    save('custom_pk', 'A-1', 0, code='A-1', name='x'),
    save('author', 1, 0, name='a', publisher=7),
    basic(1, 1, LATER, char='changed', amount='0.01', payload=[1], moment='2024-05-01 10:00'),
    basic(3, 0),
    basic(3, 2, LATER, flag=True, optional='set'),  # a lost revision: still applied
    basic(2, 0, char='duplicate'),  # a duplicate: ignored
    basic(1, 0, char='older'),  # an older revision: ignored
    save('golden_time', 1, 1, name='t2', at='23:59:59', took=None, blob='AAEC', exact=None),
    save('golden_uuid', UIDS[0], 1, name='u2'),
    save('custom_pk', 'A-1', 1, code='A-1', name='y'),
    save('author', 1, 1, name='b', publisher=None),
]
TIMES = [
    save('golden_parent', 1, 0, '2024-05-01 10:00:00+00:00', name='aware'),
    save('golden_parent', 2, 0, '2024-05-01T10:00:00Z', name='zulu'),
    save('golden_parent', 3, 0, '2024-05-01 12:00:00+02:00', name='offset'),
    save('golden_parent', 4, 0, '2024-05-01 10:00:00', name='naive'),
    save('golden_parent', 5, 0, 'not a time', name='bad'),
    save('golden_parent', 6, 0, '2024-13-01 10:00:00', name='bad date'),
    save('golden_parent', 7, 0, name='fine'),
]
HOOKS = [
    save('golden_fields', 1, 0, title='a', amount=1),
    save('golden_fields', 2, 0, title='b', amount=2),
    save('golden_fields', 1, 1, title='c', amount=3),
    save('golden_parent', 1, 0, name='p'),
]
# Enough new rows for PostgreSQL's COPY (``writes.COPY_MIN_ROWS``), then updates of some.
MANY = [basic(pk, 0) for pk in range(1, 81)] + [
    basic(pk, 1, LATER, char=f'u{pk}', amount='-1.50') for pk in range(1, 81, 3)
]
CASES = {
    'field types': FIELD_TYPES,
    'many rows': MANY,
    'cqrs_updated': TIMES,
    'overridden hooks': HOOKS,
}
RULE_LINES = re.compile(r'revision downgrade|sync order|duplicate|Lost or filtered|race cond')


def one_by_one(messages):
    for cqrs_id, data in messages:
        payload = TransportPayload('SAVE', cqrs_id, data, data['id'])
        handler.handle(payload.encode(), cqrs_id)


def batched(messages):
    deliveries = []
    for cqrs_id, data in messages:
        payload = TransportPayload('SAVE', cqrs_id, data, data['id'])
        deliveries.append(Delivery(payload.encode(), cqrs_id))
    apply_batch(deliveries)


def bulk_load(messages):
    by_model: dict[str, list[str]] = {}
    for cqrs_id, data in messages:
        by_model.setdefault(cqrs_id, []).append(json.dumps(data))
    for cqrs_id, lines in by_model.items():
        load(ReplicaRegistry.get_model_by_cqrs_id(cqrs_id), lines, write_err=lambda text: None)


def stored():
    """Every column as the database holds it (no Django conversion on the way out)."""
    result = {}
    with connection.cursor() as cursor:
        for model in MODELS:
            cursor.execute(f'SELECT * FROM {connection.ops.quote_name(model._meta.db_table)}')
            result[model.__name__] = sorted(cursor.fetchall(), key=repr)
    return result


def run(path, messages, cqrs_log):
    before = len(cqrs_log())
    for model in MODELS:
        model.objects.all().delete()
    path(messages)
    lines = [line for line in cqrs_log()[before:] if RULE_LINES.search(line)]
    return stored(), sorted(lines)


@pytest.mark.parametrize('case', CASES, ids=list(CASES))
@pytest.mark.parametrize('path', [batched, bulk_load], ids=['batched apply', 'bulk load'])
def test_fast_paths_store_what_one_by_one_stores(path, case, batch_size, cqrs_log):
    """The same rows, byte for byte, and the same revision-rule log lines as one by one."""
    batch_size(100)
    expected = run(one_by_one, CASES[case], cqrs_log)
    assert run(path, CASES[case], cqrs_log) == expected
    assert any(expected[0].values())


@pytest.mark.parametrize('path', [batched, bulk_load], ids=['batched apply', 'bulk load'])
def test_a_hook_patched_later_is_called_on_every_path(path, batch_size, monkeypatch):
    """A hook patched after start takes the model off the fast path of both fast writers."""
    batch_size(100)
    assert default_write_path(GoldenParentReplica)
    created = []
    original = GoldenParentReplica.cqrs_create.__func__

    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        created.append(mapped_data['id'])
        return original(cls, sync, mapped_data, previous_data, meta)

    monkeypatch.setattr(GoldenParentReplica, 'cqrs_create', classmethod(cqrs_create))
    assert not default_write_path(GoldenParentReplica)
    path([save('golden_parent', pk, 0, name=f'n{pk}') for pk in (1, 2, 3)])
    assert sorted(created) == [1, 2, 3]
    monkeypatch.undo()
    assert default_write_path(GoldenParentReplica)


def test_hook_overriding_models_are_off_the_fast_paths():
    """Models with their own ``cqrs_create``/``cqrs_update`` are never written in bulk."""
    assert not default_write_path(GoldenFieldsReplica)
    assert default_write_path(GoldenBasicReplica)


@pytest.mark.parametrize(
    ('text', 'expected'),
    [
        ('2024-05-01 10:00:00.5+00:00', datetime.datetime(2024, 5, 1, 10, 0, 0, 500000)),
        ('2024-05-01T12:00:00+02:00', datetime.datetime(2024, 5, 1, 10)),
        ('2024-05-01T10:00:00Z', datetime.datetime(2024, 5, 1, 10)),
        ('2024-05-01 10:00:00', datetime.datetime(2024, 5, 1, 10)),  # naive: UTC
        (' 2024-05-01 10:00 ', datetime.datetime(2024, 5, 1, 10)),
        ('not a time', None),
        ('2024-13-01 10:00:00', None),
        (None, None),
        (17, None),
    ],
)
def test_master_time_reads_every_cqrs_updated_one_way(text, expected):
    """One reader for lag, tombstones and batches: naive times are UTC, bad ones None."""
    if expected is not None:
        expected = expected.replace(tzinfo=datetime.timezone.utc)
    assert master_time(text) == expected


@pytest.mark.parametrize('path', [one_by_one, batched], ids=['one by one', 'batched apply'])
def test_lag_of_naive_and_aware_times_is_the_same(path, batch_size):
    """The lag a message reports does not depend on its time being naive or aware (UTC)."""
    from dj_cqrs import signals

    batch_size(100)
    lags = {}

    def receiver(sender, payload, lag, **kwargs):
        lags[payload.pk] = lag

    signals.message_applied.connect(receiver, weak=False)
    try:
        path(
            [
                save('golden_parent', 1, 0, '2024-05-01 10:00:00+00:00', name='a'),
                save('golden_parent', 2, 0, '2024-05-01 10:00:00', name='b'),
                save('golden_parent', 3, 0, 'not a time', name='c'),
            ]
        )
    finally:
        signals.message_applied.disconnect(receiver)
    assert lags[1] is not None and abs(lags[1] - lags[2]) < 5
    assert 3 not in lags or lags[3] is None
