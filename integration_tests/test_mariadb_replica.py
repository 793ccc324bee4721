"""The replica service on MariaDB/MySQL (mysqlclient): the core replication tests, the bulk
pipelines and several workers converging, with the same master (SQLite) and RabbitMQ."""

from __future__ import annotations

import datetime

import pytest

from integration_tests import test_pipelines as pipelines
from integration_tests import test_rabbitmq_replication as core
from tests.golden import golden_dir

pytestmark = pytest.mark.parametrize('replica_db', ['mariadb'])

# The same tests as on the PostgreSQL replica (their SQL is portable).
test_create_update_delete_reach_the_replica = core.test_create_update_delete_reach_the_replica
test_sync_reaches_the_replica_and_can_downgrade = (
    core.test_sync_reaches_the_replica_and_can_downgrade
)
test_bulk_dump_pipes_into_bulk_load_across_services = (
    pipelines.test_bulk_dump_pipes_into_bulk_load_across_services
)
test_deleted_pipeline_removes_rows_deleted_on_the_master = (
    pipelines.test_deleted_pipeline_removes_rows_deleted_on_the_master
)


def test_every_model_kind_replicates(master, replica, consumer, wait_until):
    """FK, DRF serializer, UUID pk, CQRS_FIELDS, non-id pk and custom serialization all apply."""
    consumer()
    master.shell(
        'import datetime, decimal, uuid\n'
        'from django.utils import timezone\n'
        'from masterapp.models import *\n'
        "p = GoldenParent.objects.create(id=7, name='parent')\n"
        "GoldenBasic.objects.create(id=3, char='c', text='t', flag=True, integer=1, big=2**40,\n"
        "    amount=decimal.Decimal('12.30'), ratio=0.5, day=datetime.date(2024, 2, 29),\n"
        '    moment=timezone.now(), uid=uuid.uuid4(), payload={"a": [1]}, parent=p)\n'
        "GoldenSerialized.objects.create(id=4, name='ser', price=decimal.Decimal('5.5'),\n"
        '    happened=timezone.now(), parent=p)\n'
        "GoldenUUID.objects.create(id=uuid.UUID(int=5), name='u')\n"
        "GoldenFields.objects.create(id=6, title='f', amount=3, secret='s')\n"
        "Coded.objects.create(code='AB-1', name='coded')\n"
        "Custom.objects.create(id=8, name='widget', quantity=4)\n"
    )
    checks = {
        'SELECT parent, CAST(amount AS CHAR), big, day FROM replicaapp_goldenbasicreplica': [
            (7, '12.30', 2**40, datetime.date(2024, 2, 29))
        ],
        'SELECT title, parent_name FROM replicaapp_goldenserializedreplica': [('ser', 'parent')],
        'SELECT name FROM replicaapp_goldenuuidreplica': [('u',)],
        'SELECT title, amount FROM replicaapp_goldenfieldsreplica': [('f', 3)],
        'SELECT code, name FROM replicaapp_codedreplica': [('AB-1', 'coded')],
        'SELECT summary FROM replicaapp_customreplica': [('widget x4',)],
    }
    for sql, expected in checks.items():
        wait_until(lambda sql=sql, expected=expected: replica.query(sql) == expected, what=sql)


def test_golden_dump_files_load_into_the_mariadb_replica(replica):
    """The original's dump files load into the MariaDB replica through ``cqrs_bulk_load``."""
    counts = {'parent': 3, 'basic': 5, 'uuid': 1, 'serialized': 1, 'fields': 1}
    for name, count in counts.items():
        done = replica.manage(
            'cqrs_bulk_load', '-i', str(golden_dir() / 'files' / f'bulk_dump_golden_{name}.dump')
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.endswith(f'Done!\n{count} instance(s) loaded.\n')
    basic = pipelines.rows(
        replica, 'replicaapp_goldenbasicreplica', 'id, CAST(amount AS CHAR), big'
    )
    assert [row[0] for row in basic] == [1, 3, 4, 5, 6]
    assert basic[0] == (1, '99.99', 9007199254740993)
    uuids = pipelines.rows(replica, pipelines.UUIDS, 'name')
    assert uuids == [('uuid one v2',)]


def test_two_workers_with_batches_converge_on_the_master(master, replica, consumer, wait_until):
    """Two workers applying batches of creates, updates and deletes of the same rows at once
    (batched INSERT/UPDATE, tombstones, row locks): the replica ends equal to the master."""
    consumer(workers=2)
    master.shell(
        'from masterapp.models import GoldenParent as P\n'
        "rows = [P.objects.create(id=pk, name=f'{pk}-0') for pk in range(1, 61)]\n"
        'for step in range(1, 6):\n'
        '    for row in rows:\n'
        "        row.name = f'{row.pk}-{step}'; row.save()\n"
        'for row in rows[::3]: row.delete()\n'
    )
    expected = {pk: (f'{pk}-5', 5) for pk in range(1, 61) if (pk - 1) % 3}
    wait_until(lambda: core.parents(replica) == expected, timeout=60, what='replica = master')
    tombstones = replica.query('SELECT COUNT(*) FROM dj_cqrs_tombstone')
    assert tombstones == [(20,)]
