"""Master and replica services on KombuTransport, over RabbitMQ and over Redis.

The replica worker is a real ``manage.py cqrs_consume``. The interoperability tests run one
side on KombuTransport and the other on RabbitMQTransport over the same RabbitMQ exchange.
"""

from __future__ import annotations

import json

import pytest

PARENT = 'replicaapp_goldenparentreplica'
FAIL = 'replicaapp_goldenfailreplica'
RABBITMQ = 'dj_cqrs.transport.RabbitMQTransport'

both = pytest.mark.parametrize('transport_name', ['kombu_amqp', 'kombu_redis'])


def parents(replica) -> dict[int, tuple[str, int]]:
    rows = replica.query(f'SELECT id, name, cqrs_revision FROM {PARENT} ORDER BY id')
    return {row[0]: (row[1], row[2]) for row in rows}


def dead_letters(replica) -> list[dict]:
    dump = replica.manage('cqrs_dead_letters', 'dump', check=True)
    return [json.loads(line) for line in dump.stdout.splitlines()]


@both
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


@both
def test_failing_model_retries_then_dead_letters(master, replica, consumer, wait_until):
    """CQRS_MAX_RETRIES=2: three tries a second apart, then the DLQ holds it with retries = 2."""
    c = consumer()
    master.shell(
        "from masterapp.models import GoldenFail; GoldenFail.objects.create(id=1, name='x')"
    )
    c.wait_log('CQRS is added to dead letter queue: pk = 1 (golden_fail)', timeout=30)
    log = c.log()
    assert log.count('CQRS is requeued: pk = 1 (golden_fail)') == 2
    assert 'CQRS is delayed: pk = 1 (golden_fail), correlation_id = None, delay = 1 sec' in log
    for retries in (0, 1, 2):
        assert (
            f'CQRS is failed: pk = 1 (golden_fail), correlation_id = None, retries = {retries}.'
            in log
        )
    [dead] = wait_until(lambda: dead_letters(replica), what='a dead letter')
    assert (dead['cqrs_id'], dead['retries'], dead['instance_pk']) == ('golden_fail', 2, 1)
    assert replica.query(f'SELECT count(*) FROM {FAIL}') == [(0,)]


@both
def test_dead_letters_commands_dump_retry_purge(master, replica, consumer, wait_until):
    """dump leaves the dead letter; retry brings it back (applied once fixed); purge empties."""
    c = consumer(env={'CQRS_IT_EXTRA': json.dumps({'replica': {'CQRS_MAX_RETRIES': 0}})})
    master.shell(
        "from masterapp.models import GoldenFail; GoldenFail.objects.create(id=1, name='x')"
    )
    c.wait_log('CQRS is added to dead letter queue')
    wait_until(lambda: dead_letters(replica))
    c.stop()
    assert len(dead_letters(replica)) == 1, 'dump leaves the messages in place'

    retry = replica.manage('cqrs_dead_letters', 'retry', check=True)
    lines = retry.stdout.splitlines()
    assert lines[:2] == ['Total dead letters: 1', 'Retrying: 1/1']
    assert (json.loads(lines[2])['retries'], len(lines)) == (0, 3)
    assert 'CQRS is published: pk = 1 (golden_fail), correlation_id = None.' in retry.stderr
    assert dead_letters(replica) == []

    fixed = consumer(env={'CQRS_IT_FIXED': '1'})
    wait_until(lambda: replica.query(f'SELECT id, name FROM {FAIL}'))
    assert replica.query(f'SELECT id, name FROM {FAIL}') == [(1, 'x')]
    fixed.stop()

    c = consumer(env={'CQRS_IT_EXTRA': json.dumps({'replica': {'CQRS_MAX_RETRIES': 0}})})
    master.shell(
        "from masterapp.models import GoldenFail; GoldenFail.objects.create(id=2, name='y')"
    )
    c.wait_log('CQRS is added to dead letter queue: pk = 2 (golden_fail)')
    c.stop()
    purge = replica.manage('cqrs_dead_letters', 'purge', check=True)
    assert purge.stdout == 'Total dead letters: 1\nPurged\n'
    assert replica.manage('cqrs_dead_letters', 'dump', check=True).stdout == ''
    assert replica.manage('cqrs_dead_letters', 'purge', check=True).stdout == (
        'Total dead letters: 0\n'
    )


@both
def test_sigterm_stops_the_worker_cleanly(replica, consumer):
    """SIGTERM ends ``cqrs_consume`` on Kombu with exit code 0 and the stop log line."""
    c = consumer()
    c.wait_log('Consumer process with pid')
    assert c.stop() == 0
    assert 'Consumer process with pid' in c.log() and 'stopped' in c.log()


@pytest.mark.parametrize('transport_name', ['kombu_amqp'])
def test_kombu_master_feeds_a_rabbitmq_replica(master, replica, consumer, wait_until):
    """Messages published by KombuTransport are applied by RabbitMQTransport's worker."""
    c = consumer(env={'CQRS_IT_TRANSPORT': RABBITMQ})
    master.shell(
        'from masterapp.models import GoldenParent as P\n'
        "P.objects.create(id=1, name='from kombu'); P.objects.create(id=2, name='two')\n"
        'P.objects.get(id=2).delete()\n'
    )
    wait_until(lambda: parents(replica) == {1: ('from kombu', 0)})
    master.shell(
        "from masterapp.models import GoldenFail; GoldenFail.objects.create(id=1, name='x')"
    )
    c.wait_log('CQRS is added to dead letter queue: pk = 1 (golden_fail)', timeout=30)
    [dead] = wait_until(lambda: dead_letters(replica))
    assert dead['retries'] == 2


@pytest.mark.parametrize('transport_name', ['kombu_amqp'])
def test_rabbitmq_master_feeds_a_kombu_replica(master, replica, consumer, wait_until):
    """Messages published by RabbitMQTransport are applied by KombuTransport's worker."""
    rabbitmq = {'CQRS_IT_TRANSPORT': RABBITMQ}
    c = consumer()
    master.shell(
        'from masterapp.models import GoldenParent as P\n'
        "P.objects.create(id=1, name='from pika'); P.objects.create(id=2, name='two')\n"
        "p = P.objects.get(id=1); p.name = 'uno'; p.save()\n",
        env=rabbitmq,
    )
    wait_until(lambda: parents(replica) == {1: ('uno', 1), 2: ('two', 0)})
    master.shell(
        "from masterapp.models import GoldenFail; GoldenFail.objects.create(id=1, name='x')",
        env=rabbitmq,
    )
    c.wait_log('CQRS is added to dead letter queue: pk = 1 (golden_fail)', timeout=30)
    retry = replica.manage('cqrs_dead_letters', 'retry', check=True, env=rabbitmq)
    assert retry.stdout.splitlines()[:2] == ['Total dead letters: 1', 'Retrying: 1/1']
    c.wait_log('CQRS is failed: pk = 1 (golden_fail), correlation_id = None, retries = 0.', count=2)
