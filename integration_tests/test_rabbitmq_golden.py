"""Wire compatibility with django-cqrs 3.1, checked against the captured golden messages."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from integration_tests import rabbit
from integration_tests.harness import wait_until

GOLDEN = Path('/work/shared/spec/golden')
GOLDEN_QUEUE = 'golden_replica'
EXPIRES = re.compile(rb'"expires":"[^"]*"')


def golden_files() -> list[Path]:
    """Message files in capture order (the README's index)."""
    readme = (GOLDEN / 'README.md').read_text()
    names = list(dict.fromkeys(re.findall(r'messages/([a-z0-9_]+\.json)', readme)))
    return [GOLDEN / 'messages' / name for name in names]


def load(name: str) -> dict:
    return json.loads((GOLDEN / 'messages' / name).read_text())


def our_key(golden_key: str, stack) -> str:
    return golden_key.replace(f'cqrs.{GOLDEN_QUEUE}.', f'cqrs.{stack.queue}.')


pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason='golden data not available')


def test_every_golden_message_applies(stack, replica, consumer):
    """Each master message of golden/messages/, published raw (bytes, routing key and
    properties as captured), is received and applied by our worker: none fails, none is
    dead-lettered or rejected."""
    c = consumer(env={'CQRS_IT_FIXED': '1'})
    published = 0
    for path in golden_files():
        for message in json.loads(path.read_text())['messages']:
            if message['routing_key'].startswith('cqrs.dead_letter_'):
                continue  # a dead-letter copy: it goes to the DLQ, not to the replica
            body = base64.b64decode(message['body_b64'])
            # The captured `expires` are a day after the capture: keep them in the future.
            body = EXPIRES.sub(b'"expires":"2100-01-01T00:00:00+00:00"', body)
            rabbit.publish_raw(
                our_key(message['routing_key'], stack),
                body,
                message['properties'],
                exchange=stack.exchange,
            )
            published += 1
    assert published >= 50
    wait_until(
        lambda: (
            c.log().count('CQRS is received') >= published
            and rabbit.queue_counts(stack.queue)[0] == 0
        ),
        60,
        what=f'{published} messages received',
    )
    c.stop()
    log = c.log()
    assert log.count('CQRS is received') == published
    for bad in ('CQRS is failed', 'dead letter', "couldn't", 'is not found', 'Traceback'):
        assert bad not in log, log
    assert rabbit.peek(stack.dead_letter_queue) == []
    final = json.loads((GOLDEN / 'replica' / 'final_tables_e2e.json').read_text())['tables']
    for cqrs_id, table in [
        ('golden_parent', 'replicaapp_goldenparentreplica'),
        ('golden_basic', 'replicaapp_goldenbasicreplica'),
        ('golden_serialized', 'replicaapp_goldenserializedreplica'),
        ('golden_fields', 'replicaapp_goldenfieldsreplica'),
    ]:
        expected = sorted((row['id'], row['cqrs_revision']) for row in final[cqrs_id])
        assert sorted(replica.query(f'SELECT id, cqrs_revision FROM {table}')) == expected, cqrs_id


MASTER_STEPS = (
    'import datetime, decimal, uuid\n'
    'from masterapp.models import *\n'
    "p1 = GoldenParent.objects.create(id=1, name='Parent ü/1')\n"
    "p2 = GoldenParent.objects.create(id=2, name='Parent 2')\n"
    "b = GoldenBasic.objects.create(char='c', text='t', flag=True, integer=-42, big=2**53 + 1,\n"
    "    amount=decimal.Decimal('12.30'), ratio=3.14, day=datetime.date(2024, 2, 29),\n"
    '    moment=datetime.datetime(2024, 2, 29, 13, 45, 30, 123456, tzinfo=datetime.timezone.utc),\n'
    "    uid=uuid.UUID('12345678-1234-5678-1234-567812345678'), payload={'z': 1},\n"
    '    optional=None, parent=p1)\n'
    "b.char = 'Changed'; b.amount = decimal.Decimal('99.99'); b.save()\n"
    "b.parent = p2; b.optional = 'now set'; b.save()\n"
    "s = GoldenSerialized.objects.create(name='Sér/ialized', price=decimal.Decimal('5.5'),\n"
    '    happened=datetime.datetime(2023, 7, 14, 8, 30, 0, 500, tzinfo=datetime.timezone.utc),\n'
    '    parent=p1)\n'
    "u = GoldenUUID.objects.create(id=uuid.UUID('aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'),\n"
    "    name='uuid one')\n"
    "u.name = 'uuid one v2'; u.save()\n"
    "f = GoldenFields.objects.create(title='Title ü', amount=10)\n"
    "f.title = 'Title v2'; f.secret = 's3cret'; f.save()\n"
    'b.cqrs_sync()\n'
    'b.cqrs_sync(queue={queue!r})\n'
    'b.delete()\n'
    'f.delete()\n'
)
EXPECTED = [
    'create_parent.json',
    'create_parent2.json',
    'create_basic.json',
    'update_basic.json',
    'update_basic_fk.json',
    'create_serialized.json',
    'create_uuid.json',
    'update_uuid.json',
    'create_fields.json',
    'update_fields_tracked.json',
    'sync_basic_broadcast.json',
    'sync_basic_queue.json',
    'delete_basic.json',
    'delete_fields_custom.json',
]


def test_our_messages_look_like_the_golden_ones(master, stack):
    """What our master publishes, read off a bound queue, has the golden routing keys,
    properties, body keys (in order), instance_data keys and previous_data keys."""
    with rabbit.Capture(['#'], exchange=stack.exchange) as capture:
        master.shell(MASTER_STEPS.replace('{queue!r}', repr(stack.queue)))
        ours = capture.messages(count=len(EXPECTED), timeout=20)
    assert len(ours) == len(EXPECTED), [m.routing_key for m in ours]
    for name, mine in zip(EXPECTED, ours, strict=True):
        golden = load(name)['messages'][0]
        assert mine.routing_key == our_key(golden['routing_key'], stack), name
        assert mine.properties == golden['properties'], name
        body, golden_body = json.loads(mine.body), golden['body_json']
        assert list(body) == list(golden_body), name
        for key in ('signal_type', 'cqrs_id', 'retries', 'correlation_id', 'meta'):
            assert body[key] == golden_body[key], (name, key)
        assert list(body['instance_data']) == list(golden_body['instance_data']), name
        if name.startswith(('create_', 'update_')):  # same history as the golden run
            revision = body['instance_data']['cqrs_revision']
            assert revision == golden_body['instance_data']['cqrs_revision'], name
        if golden_body['previous_data'] is None:
            assert body['previous_data'] is None, name
        else:
            assert set(body['previous_data']) == set(golden_body['previous_data']), name
        assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00', body['expires']), name


def test_topology_matches_the_golden_one(stack, consumer):
    """Queues are durable with no arguments; bindings per cqrs_id as the original's."""
    consumer()
    golden = json.loads((GOLDEN / 'topology.json').read_text())
    golden_keys = {
        b['routing_key'].replace(GOLDEN_QUEUE, stack.queue)
        for b in golden['bindings']
        if b['source_name'] == 'cqrs' and b['destination_name'] == GOLDEN_QUEUE
    }
    ours = rabbit.bindings_of(stack.queue, stack.exchange)
    assert golden_keys <= ours
    assert {k for k in ours if k.startswith('cqrs.')} == {
        f'cqrs.{stack.queue}.{k}' for k in ours if not k.startswith('cqrs.')
    }
    dead = rabbit.bindings_of(stack.dead_letter_queue, stack.exchange)
    assert dead == {f'cqrs.{stack.dead_letter_queue}.{k}' for k in ours if '.' not in k}
    with rabbit.channel() as ch:
        for queue in stack.queues:
            ch.queue_declare(queue, durable=True)  # same flags, no arguments: no error
