"""Retries, dead letters and `cqrs_dead_letters` over a real RabbitMQ."""

from __future__ import annotations

import json

from integration_tests import rabbit

FAIL = 'replicaapp_goldenfailreplica'
UPDATED = '2024-01-01 00:00:00+00:00'


def dead_letters(stack) -> list[rabbit.Message]:
    return rabbit.peek(stack.dead_letter_queue)


def test_failing_model_retries_then_dead_letters(master, replica, stack, consumer, wait_until):
    """CQRS_MAX_RETRIES=2: three tries, then the message waits in the DLQ with retries = 2."""
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
    dead = wait_until(lambda: dead_letters(stack), what='a dead letter')
    assert len(dead) == 1
    message = dead[0]
    assert message.routing_key == f'cqrs.{stack.dead_letter_queue}.golden_fail'
    assert message.properties['expiration'] == '864000000'
    assert message.properties['delivery_mode'] == 2
    assert message.properties['content_type'] == 'text/plain'
    assert json.loads(message.body)['retries'] == 2
    assert rabbit.queue_counts(stack.queue)[0] == 0
    assert replica.query(f'SELECT count(*) FROM {FAIL}') == [(0,)]


def test_dead_message_ttl_setting_sets_the_expiration(master, stack, consumer, wait_until):
    """dead_message_ttl=60 gives dead letters expiration '60000'; 0 retries go straight there."""
    extra = {'replica': {'dead_message_ttl': 60, 'CQRS_MAX_RETRIES': 0}}
    c = consumer(env={'CQRS_IT_EXTRA': json.dumps(extra)})
    master.shell(
        "from masterapp.models import GoldenFail; GoldenFail.objects.create(id=1, name='x')"
    )
    c.wait_log('CQRS is added to dead letter queue')
    assert 'CQRS is requeued' not in c.log()
    dead = wait_until(lambda: dead_letters(stack))
    assert dead[0].properties['expiration'] == '60000'


def test_expired_message_goes_to_dead_letters(stack, replica, consumer, wait_until):
    """A message whose `expires` has passed is not applied: it is moved to the DLQ."""
    c = consumer()
    data = {'id': 5, 'name': 'old', 'cqrs_revision': 0, 'cqrs_updated': UPDATED}
    rabbit.publish_raw(
        'golden_parent',
        rabbit.body('golden_parent', 5, data, expires='2001-01-01T00:00:00+00:00'),
        exchange=stack.exchange,
    )
    c.wait_log('CQRS is added to dead letter queue: pk = 5 (golden_parent)')
    dead = wait_until(lambda: dead_letters(stack))
    assert json.loads(dead[0].body)['instance_pk'] == 5
    assert replica.query('SELECT count(*) FROM replicaapp_goldenparentreplica') == [(0,)]


def test_dead_letters_commands_dump_retry_purge(master, replica, stack, consumer, wait_until):
    """dump shows the dead letter; retry brings it back and it applies once the model is fixed;
    purge empties the queue (outputs as the original's)."""
    c = consumer(env={'CQRS_IT_EXTRA': json.dumps({'replica': {'CQRS_MAX_RETRIES': 0}})})
    master.shell(
        "from masterapp.models import GoldenFail; GoldenFail.objects.create(id=1, name='x')"
    )
    c.wait_log('CQRS is added to dead letter queue')
    wait_until(lambda: dead_letters(stack))
    c.stop()

    dump = replica.manage('cqrs_dead_letters', 'dump', check=True)
    [line] = dump.stdout.splitlines()
    assert json.loads(line)['cqrs_id'] == 'golden_fail'
    assert len(dead_letters(stack)) == 1, 'dump leaves the messages in place'

    retry = replica.manage('cqrs_dead_letters', 'retry', check=True)
    lines = retry.stdout.splitlines()
    assert lines[:2] == ['Total dead letters: 1', 'Retrying: 1/1']
    assert json.loads(lines[2])['retries'] == 0
    assert 'CQRS is published: pk = 1 (golden_fail), correlation_id = None.' in retry.stderr
    assert dead_letters(stack) == []
    back_messages = rabbit.peek(stack.queue)
    assert len(back_messages) == 1, back_messages
    [back] = back_messages
    assert back.routing_key == f'cqrs.{stack.queue}.golden_fail'

    consumer(env={'CQRS_IT_FIXED': '1'})
    wait_until(lambda: replica.query('SELECT id, name FROM replicaapp_goldenfailreplica'))
    assert replica.query('SELECT id, name FROM replicaapp_goldenfailreplica') == [(1, 'x')]

    data = {'id': 5, 'name': 'old', 'cqrs_revision': 0, 'cqrs_updated': UPDATED}
    rabbit.publish_raw(
        'golden_parent',
        rabbit.body('golden_parent', 5, data, expires='2001-01-01T00:00:00+00:00'),
        exchange=stack.exchange,
    )
    wait_until(lambda: dead_letters(stack))
    purge = replica.manage('cqrs_dead_letters', 'purge', check=True)
    assert purge.stdout == 'Total dead letters: 1\nPurged\n'
    assert replica.manage('cqrs_dead_letters', 'dump', check=True).stdout == ''
    assert replica.manage('cqrs_dead_letters', 'purge', check=True).stdout == (
        'Total dead letters: 0\n'
    )


def test_dead_letters_command_needs_a_subcommand(replica):
    """`cqrs_dead_letters` without a sub-command is an argparse error (exit 1... or 2)."""
    proc = replica.manage('cqrs_dead_letters')
    assert proc.returncode != 0
    assert 'retry' in proc.stderr and 'dump' in proc.stderr and 'purge' in proc.stderr
