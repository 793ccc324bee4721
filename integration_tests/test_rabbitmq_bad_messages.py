"""Malformed messages published raw never stop the worker (decisions §2.8)."""

from __future__ import annotations

import json

from integration_tests import rabbit
from tests import hostile

UPDATED = '2024-01-01 00:00:00+00:00'


def good(pk: int, **changes) -> dict:
    message = {
        'signal_type': 'SAVE',
        'cqrs_id': 'golden_parent',
        'instance_data': {'id': pk, 'name': f'n{pk}', 'cqrs_revision': 0, 'cqrs_updated': UPDATED},
        'previous_data': None,
        'instance_pk': pk,
        'correlation_id': None,
        'retries': 0,
        'expires': '2100-01-01T00:00:00+00:00',
        'meta': None,
    }
    message.update(changes)
    return message


def without(key: str, pk: int) -> bytes:
    message = good(pk)
    del message[key]
    return json.dumps(message).encode()


def encoded(**changes) -> bytes:
    return json.dumps(good(**changes)).encode()


CORPUS: list[tuple[str, bytes, dict | None]] = [
    ('invalid JSON', b'{"signal_type": "SAVE", ', None),
    ('not UTF-8', b'\xff\xfe\xfa\x00garbage', None),
    ('empty body', b'', None),
    ('JSON array', b'[1, 2, 3]', None),
    ('JSON null', b'null', None),
    ('JSON string', b'"SAVE golden_parent"', None),
    ('missing instance_data', without('instance_data', 101), None),
    ('missing cqrs_id', without('cqrs_id', 102), None),
    ('missing instance_pk', without('instance_pk', 103), None),
    ('unknown cqrs_id', encoded(pk=104, cqrs_id='no_such_model'), None),
    ('wrong signal type', encoded(pk=105, signal_type='EXPLODE'), None),
    ('instance_data is a list', encoded(pk=106, instance_data=[1, 2]), None),
    (
        'revision is text',
        encoded(pk=107, instance_data={'id': 107, 'name': 'x', 'cqrs_revision': 'abc'}),
        None,
    ),
    (
        'bad date',
        encoded(
            pk=108,
            instance_data={'id': 108, 'name': 'x', 'cqrs_revision': 0, 'cqrs_updated': 'nope'},
        ),
        None,
    ),
    ('bad expires', encoded(pk=109, expires='yesterday at noon'), None),
    ('expires is a number', encoded(pk=110, expires=12345), None),
    ('retries negative', encoded(pk=111, retries=-3), None),
    ('retries text', encoded(pk=112, retries='many'), None),
    (
        '1 MB body',
        encoded(
            pk=113,
            instance_data={
                'id': 113,
                'name': 'x' * (1024 * 1024),
                'cqrs_revision': 0,
                'cqrs_updated': UPDATED,
            },
        ),
        None,
    ),
    ('deep nesting', b'{"a":' * 5000 + b'1' + b'}' * 5000, None),
    ('DELETE without id', encoded(pk=114, signal_type='DELETE', instance_data={}), None),
    ('no AMQP properties at all', encoded(pk=115, cqrs_id='no_such_model'), {}),
    (
        'odd AMQP properties',
        b'{"x": 1}',
        {'content_type': 'application/x-pickle', 'headers': {'a': 1}, 'priority': 9},
    ),
]


# The hostile corpus (wrong JSON types, unusable pks and revisions, deep nesting), each one
# rejected or dead-lettered at once.
CORPUS += [(f'hostile: {name}', body, None) for name, body, _ in hostile.BODIES]


def outcomes(log: str) -> int:
    """Final outcomes (rejected or dead-lettered) in a worker log."""
    return (
        log.count("CQRS couldn't be parsed")
        + log.count("CQRS couldn't proceed")
        + log.count('is not found.')
        + log.count('CQRS is added to dead letter queue')
        + log.count("CQRS couldn't be added to dead letter queue")
    )


def test_no_bad_message_stops_the_worker(stack, replica, consumer, wait_until):
    """Each malformed body is rejected or dead-lettered with a log line; the worker goes on and
    a good message published after all of them applies."""
    extra = {'replica': {'CQRS_MAX_RETRIES': 1, 'CQRS_RETRY_DELAY': 0}}
    c = consumer(env={'CQRS_IT_EXTRA': json.dumps(extra)})
    pids = c.worker_pids()
    for _name, body, properties in CORPUS:
        rabbit.publish_raw('golden_parent', body, properties, exchange=stack.exchange)
    rabbit.publish_raw('golden_parent', encoded(pk=1), exchange=stack.exchange)
    c.wait_log('CQRS is applied: pk = 1 (golden_parent)', timeout=60)
    # Retried copies may still be on their way behind the good message: wait until every
    # bad message has its final outcome (malformed `expires` ones are applied, see below).
    wait_until(lambda: outcomes(c.log()) >= len(CORPUS) - 2, 60, what='all outcomes')
    rows = replica.query('SELECT id, name FROM replicaapp_goldenparentreplica ORDER BY id')
    c.stop()
    # A malformed `expires` is not a reason to lose the change: it is applied with the
    # default TTL and a warning (dj_cqrs.dataclasses); everything else is refused.
    assert rows == [(1, 'n1'), (109, 'n109'), (110, 'n110')], rows

    log = c.log()
    assert c.worker_pids() == pids, 'no worker was restarted'
    assert 'died' not in log
    assert log.count('CQRS message has a malformed expires value') == 2
    assert rabbit.queue_counts(stack.queue)[0] == 0, 'nothing left unacked or requeued forever'
    dead = rabbit.peek(stack.dead_letter_queue)
    assert all(json.loads(m.body)['cqrs_id'] == 'golden_parent' for m in dead)


def test_undecodable_bodies_are_rejected_not_dead_lettered(stack, consumer):
    """Bodies that are not a JSON object are rejected at once with a 'couldn't be parsed' line."""
    undecodable = CORPUS[:6]
    c = consumer()
    for _name, body, properties in undecodable:
        rabbit.publish_raw('golden_parent', body, properties, exchange=stack.exchange)
    c.wait_log("CQRS couldn't be parsed", count=len(undecodable))
    assert 'CQRS is requeued' not in c.log()
    assert rabbit.peek(stack.dead_letter_queue) == []
