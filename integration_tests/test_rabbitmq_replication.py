"""Master and replica services over a real RabbitMQ, with `cqrs_consume` as a subprocess."""

from __future__ import annotations

import json

from integration_tests import rabbit

PARENT = 'replicaapp_goldenparentreplica'


def parents(replica) -> dict[int, tuple[str, int]]:
    rows = replica.query(f'SELECT id, name, cqrs_revision FROM {PARENT} ORDER BY id')
    return {row[0]: (row[1], row[2]) for row in rows}


def test_create_update_delete_reach_the_replica(master, replica, consumer, wait_until):
    """Create, update and delete on the master end up on the replica, in order."""
    consumer()
    master.shell(
        'from masterapp.models import GoldenParent as P\n'
        "P.objects.create(id=1, name='one'); P.objects.create(id=2, name='two')\n"
        "p = P.objects.get(id=1); p.name = 'uno'; p.save()\n"
        'P.objects.get(id=2).delete()\n'
    )
    wait_until(lambda: parents(replica) == {1: ('uno', 1)}, what='replica = {1: uno rev 1}')


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
        'SELECT parent, amount::text FROM replicaapp_goldenbasicreplica': [(7, '12.30')],
        'SELECT title, parent_name FROM replicaapp_goldenserializedreplica': [('ser', 'parent')],
        'SELECT name FROM replicaapp_goldenuuidreplica': [('u',)],
        'SELECT title, amount FROM replicaapp_goldenfieldsreplica': [('f', 3)],
        'SELECT code, name FROM replicaapp_codedreplica': [('AB-1', 'coded')],
        'SELECT summary FROM replicaapp_customreplica': [('widget x4',)],
    }
    for sql, expected in checks.items():
        wait_until(lambda sql=sql, expected=expected: replica.query(sql) == expected, what=sql)


def test_sync_reaches_the_replica_and_can_downgrade(master, replica, consumer, wait_until):
    """A SYNC applies the master's state even over a newer replica revision."""
    consumer()
    master.shell(
        "from masterapp.models import GoldenParent as P; P.objects.create(id=1, name='one')"
    )
    wait_until(lambda: parents(replica) == {1: ('one', 0)})
    replica.query(f"UPDATE {PARENT} SET name = 'changed', cqrs_revision = 5")
    master.shell('from masterapp.models import GoldenParent as P; P.objects.get(id=1).cqrs_sync()')
    wait_until(lambda: parents(replica) == {1: ('one', 0)}, what='sync restores the row')


def test_sync_to_one_queue_reaches_only_that_queue(master, replica, stack, consumer, wait_until):
    """A SYNC addressed to this replica's queue reaches it and not another replica's queue
    (bound like a second service would bind); a broadcast SYNC reaches both."""
    other_keys = ['golden_parent', 'cqrs.other_service.golden_parent']
    with rabbit.Capture(other_keys, exchange=stack.exchange) as other:
        c = consumer()
        master.shell(
            'from masterapp.models import GoldenParent as P\n'
            "P.objects.bulk_create([P(id=1, name='one')])\n"
            f'P.objects.get(id=1).cqrs_sync(queue={stack.queue!r})\n'
        )
        wait_until(lambda: parents(replica) == {1: ('one', 0)})
        assert other.messages(count=1, timeout=2) == []
        master.shell(
            'from masterapp.models import GoldenParent as P; P.objects.get(id=1).cqrs_sync()'
        )
        c.wait_log('CQRS is received: pk = 1 (golden_parent)', count=2)
        [broadcast] = other.messages(count=1, timeout=10)
    assert broadcast.routing_key == 'golden_parent'


def test_sync_to_another_queue_does_not_reach_this_replica(master, replica, consumer, stack):
    """A SYNC addressed to another queue is never applied here."""
    c = consumer()
    master.shell(
        'from masterapp.models import GoldenParent as P\n'
        "P.objects.bulk_create([P(id=1, name='one')])\n"
        "P.objects.get(id=1).cqrs_sync(queue='some_other_service')\n"
        "P.objects.bulk_create([P(id=2, name='marker')])\n"
        'P.objects.get(id=2).cqrs_sync()\n'
    )
    c.wait_log('CQRS is applied: pk = 2 (golden_parent)')
    assert parents(replica) == {2: ('marker', 0)}


def test_only_direct_syncs_model(master, replica, consumer, stack, wait_until):
    """CQRS_ONLY_DIRECT_SYNCS: a SYNC to this queue applies, a broadcast SYNC is ignored."""
    c = consumer()
    master.shell(
        'from masterapp.models import Direct\n'
        "Direct.objects.bulk_create([Direct(id=1, name='a'), Direct(id=2, name='b')])\n"
        'Direct.objects.get(id=1).cqrs_sync()\n'
        f'Direct.objects.get(id=2).cqrs_sync(queue={stack.queue!r})\n'
    )
    c.wait_log('(it_direct)', count=4)  # received + applied/acked lines for both messages
    wait_until(
        lambda: replica.query('SELECT id, name FROM replicaapp_directreplica') == [(2, 'b')],
        what='only the direct sync applied',
    )


def test_messages_wait_in_the_queue_while_no_worker_runs(master, replica, consumer, wait_until):
    """Published while the replica is down, applied once its worker starts."""
    consumer().stop()  # declares the queue and bindings, then goes away
    master.shell(
        "from masterapp.models import GoldenParent as P; P.objects.create(id=9, name='later')"
    )
    consumer()
    wait_until(lambda: parents(replica) == {9: ('later', 0)})


def test_consume_only_selected_cqrs_ids(master, replica, consumer, stack, wait_until):
    """`--cqrs-id` binds only the chosen ids on a fresh queue."""
    consumer(args=['--cqrs-id', 'golden_parent'])
    bound = rabbit.bindings_of(stack.queue, stack.exchange)
    assert {'golden_parent', f'cqrs.{stack.queue}.golden_parent'} <= bound
    # Bindings of earlier runs stay (as in the original); this run declared only its ids.
    master.shell(
        "from masterapp.models import GoldenParent as P; P.objects.create(id=1, name='one')"
    )
    wait_until(lambda: parents(replica) == {1: ('one', 0)})


def test_wrong_cqrs_id_is_refused(replica):
    """`cqrs_consume --cqrs-id golden_nope`: the original's exit code and stderr, exactly
    (golden/errors.json)."""
    proc = replica.manage('cqrs_consume', '--cqrs-id', 'golden_nope')
    assert (proc.returncode, proc.stdout) == (1, '')
    assert proc.stderr == (
        'ERROR django-cqrs No model with such CQRS_ID: golden_nope.\n'
        'CommandError: Wrong CQRS ID: golden_nope!\n'
    )


def test_dead_letters_without_subcommand_is_a_usage_error(replica):
    """`cqrs_dead_letters` alone: exit 2 and argparse's 'required: command' (golden/errors.json)."""
    proc = replica.manage('cqrs_dead_letters', env={'COLUMNS': '80'})
    assert (proc.returncode, proc.stdout) == (2, '')
    assert '{retry,dump,purge} ...' in proc.stderr
    assert proc.stderr.endswith(
        'manage.py cqrs_dead_letters: error: the following arguments are required: command\n'
    )


def test_extra_settings_reach_the_worker(replica, consumer, stack):
    """CQRS_IT_EXTRA is merged into the replica's CQRS settings (fixture self-check)."""
    out = replica.shell(
        'from dj_cqrs.conf import get_settings; s = get_settings(); '
        'print(s.replica.max_retries, s.queue)',
        env={'CQRS_IT_EXTRA': json.dumps({'replica': {'CQRS_MAX_RETRIES': 7}})},
    )
    assert out.split() == ['7', stack.queue]
