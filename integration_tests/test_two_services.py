"""A master service and a replica service as two processes, over RabbitMQ and Kombu+Redis.

The master (SQLite) changes rows with ``manage.py shell``; the replica (PostgreSQL) runs
``manage.py cqrs_consume``; the tests read the replica's database. Each behaviour is checked
on both transports: create, update, delete, sync, tracked fields, a mapped replica and a
custom-serialization replica.
"""

from __future__ import annotations

import json
import uuid

import pytest

TRANSPORTS = pytest.mark.parametrize('transport_name', ['rabbitmq', 'kombu_redis'])

PARENT = 'replicaapp_goldenparentreplica'
SERIALIZED = 'replicaapp_goldenserializedreplica'
FIELDS = 'replicaapp_goldenfieldsreplica'
CUSTOM = 'replicaapp_customreplica'


def rows(service, sql: str) -> list[tuple]:
    return [tuple(row) for row in service.query(sql)]


@TRANSPORTS
def test_create_update_delete(master, replica, consumer, wait_until):
    """Rows created, updated and deleted on the master are so on the replica, in order."""
    consumer()
    master.shell(
        'from masterapp.models import GoldenParent as P\n'
        "for i, name in enumerate(['a', 'b', 'c'], 1): P.objects.create(id=i, name=name)\n"
    )
    sql = f'SELECT id, name, cqrs_revision FROM {PARENT} ORDER BY id'
    wait_until(lambda: rows(replica, sql) == [(1, 'a', 0), (2, 'b', 0), (3, 'c', 0)])
    master.shell(
        'from masterapp.models import GoldenParent as P\n'
        "p = P.objects.get(id=2); p.name = 'b2'; p.save()\n"
        "p.name = 'b3'; p.save()\n"
        'P.objects.get(id=3).delete()\n'
    )
    wait_until(lambda: rows(replica, sql) == [(1, 'a', 0), (2, 'b3', 2)], what=sql)
    assert rows(master, sql.replace(PARENT, 'masterapp_goldenparent')) == rows(replica, sql)


@TRANSPORTS
def test_foreign_key_and_field_types(master, replica, consumer, wait_until):
    """A ForeignKey arrives as the parent's id; decimals, dates and JSON keep their values."""
    consumer()
    master.shell(
        'import datetime, decimal, uuid\n'
        'from masterapp.models import GoldenBasic, GoldenParent\n'
        "p = GoldenParent.objects.create(id=10, name='parent')\n"
        "GoldenBasic.objects.create(id=1, char='c', text='t', flag=True, integer=-5,\n"
        "    big=2**40, amount=decimal.Decimal('12.30'), ratio=0.25,\n"
        '    day=datetime.date(2024, 2, 29),\n'
        '    moment=datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc),\n'
        "    uid=uuid.UUID(int=7), payload={'k': [1, 'ü']}, parent=p)\n"
    )
    sql = (
        'SELECT parent, amount::text, big, day::text, uid::text, payload::text '
        'FROM replicaapp_goldenbasicreplica'
    )
    expected = [(10, '12.30', 2**40, '2024-02-29', str(uuid.UUID(int=7)), '{"k": [1, "ü"]}')]
    wait_until(lambda: rows(replica, sql) == expected, what=sql)


@TRANSPORTS
def test_sync_repairs_a_diverged_and_a_missing_row(master, replica, consumer, wait_until):
    """`cqrs_sync` on the master restores a replica row changed by hand and one deleted by hand."""
    consumer()
    master.shell(
        'from masterapp.models import GoldenParent as P\n'
        "P.objects.create(id=1, name='one'); P.objects.create(id=2, name='two')\n"
    )
    sql = f'SELECT id, name, cqrs_revision FROM {PARENT} ORDER BY id'
    wait_until(lambda: rows(replica, sql) == [(1, 'one', 0), (2, 'two', 0)])
    replica.query(f"UPDATE {PARENT} SET name = 'drifted', cqrs_revision = 9 WHERE id = 1")
    replica.query(f'DELETE FROM {PARENT} WHERE id = 2')
    proc = master.manage('cqrs_sync', '--cqrs-id', 'golden_parent', '--filter', '{}', check=True)
    assert '2 instance(s) synced.' in proc.stdout
    wait_until(lambda: rows(replica, sql) == [(1, 'one', 0), (2, 'two', 0)], what=sql)


@TRANSPORTS
def test_tracked_fields_reach_the_replica_hooks(master, replica, consumer, wait_until):
    """CQRS_TRACKED_FIELDS: the replica's cqrs_update gets the previous values of changed fields."""
    consumer()
    master.shell(
        'from masterapp.models import GoldenFields\n'
        "GoldenFields.objects.create(id=1, title='draft', amount=1, secret='s1')\n"
    )
    sql = f'SELECT title, amount, last_previous::text FROM {FIELDS}'
    wait_until(lambda: rows(replica, sql) and rows(replica, sql)[0][:2] == ('draft', 1), what=sql)
    master.shell(
        'from masterapp.models import GoldenFields\n'
        "f = GoldenFields.objects.get(id=1); f.title = 'final'; f.secret = 's2'; f.amount = 2\n"
        'f.save()\n'
    )
    wait_until(lambda: rows(replica, sql)[0][:2] == ('final', 2), what=sql)
    previous = json.loads(rows(replica, sql)[0][2])
    # Only tracked fields, with their values before the update (amount is not tracked).
    assert previous == {'title': 'draft', 'secret': 's1'}


@TRANSPORTS
def test_mapped_replica(master, replica, consumer, wait_until):
    """CQRS_MAPPING: the master's serializer output lands in the replica's renamed columns."""
    consumer()
    master.shell(
        'import datetime, decimal\n'
        'from masterapp.models import GoldenParent, GoldenSerialized\n'
        "p = GoldenParent.objects.create(id=5, name='shelf')\n"
        "GoldenSerialized.objects.create(id=1, name='widget', price=decimal.Decimal('1.250'),\n"
        '    happened=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), parent=p)\n'
    )
    sql = f'SELECT id, title, price::text, parent_name, tags::text, cqrs_revision FROM {SERIALIZED}'
    wait_until(
        lambda: rows(replica, sql) == [(1, 'widget', '1.250', 'shelf', '["golden", "ü/x", 6]', 0)],
        what=sql,
    )
    master.shell(
        'from masterapp.models import GoldenSerialized\n'
        "s = GoldenSerialized.objects.get(id=1); s.name = 'gadget'; s.save()\n"
    )
    wait_until(
        lambda: rows(replica, sql) == [(1, 'gadget', '1.250', 'shelf', '["golden", "ü/x", 6]', 1)],
        what=sql,
    )
    master.shell(
        'from masterapp.models import GoldenSerialized; GoldenSerialized.objects.all().delete()'
    )
    wait_until(lambda: rows(replica, sql) == [], what='mapped row deleted')


@TRANSPORTS
def test_custom_serialization_replica(master, replica, consumer, wait_until):
    """CQRS_CUSTOM_SERIALIZATION: the replica's hooks build their own columns on each change."""
    consumer()
    master.shell(
        'from masterapp.models import Custom\n'
        "Custom.objects.create(id=1, name='bolt', quantity=3)\n"
        "Custom.objects.create(id=2, name='nut', quantity=7)\n"
    )
    sql = f'SELECT id, summary, cqrs_revision FROM {CUSTOM} ORDER BY id'
    wait_until(lambda: rows(replica, sql) == [(1, 'bolt x3', 0), (2, 'nut x7', 0)], what=sql)
    master.shell(
        'from masterapp.models import Custom\n'
        'c = Custom.objects.get(id=1); c.quantity = 4; c.save()\n'
        'Custom.objects.get(id=2).delete()\n'
    )
    wait_until(lambda: rows(replica, sql) == [(1, 'bolt x4', 1)], what=sql)


@TRANSPORTS
def test_changes_made_while_the_replica_is_down_arrive_in_order(
    master, replica, consumer, wait_until
):
    """With the worker stopped the queue keeps every change; restarted, it applies them in order."""
    consumer().stop()  # the queue and its bindings now exist
    master.shell(
        'from masterapp.models import GoldenParent as P, Custom\n'
        "p = P.objects.create(id=1, name='v0')\n"
        "for n in range(1, 6): p.name = f'v{n}'; p.save()\n"
        "Custom.objects.create(id=3, name='gear', quantity=1)\n"
    )
    consumer()
    wait_until(
        lambda: (
            rows(replica, f'SELECT name, cqrs_revision FROM {PARENT}') == [('v5', 5)]
            and rows(replica, f'SELECT summary FROM {CUSTOM}') == [('gear x1',)]
        ),
        what='all changes applied',
    )
