"""Hostile messages (issue 12, B): the corpus of ``tests.hostile`` through every path.

Each bad body ends rejected or dead-lettered with one log line, never retried; every good
message is applied exactly once; a bad one never creates, changes or deletes a row. The paths:
one message per transaction, the batched apply, the RabbitMQ worker's batches, the Kombu
worker (``memory://``, RabbitMQ, Redis) and ``cqrs_bulk_load``.
"""

from __future__ import annotations

import io
import json
import logging
import tracemalloc

import pytest
from django.core.management import call_command

from dj_cqrs.consumer import handler
from dj_cqrs.consumer.batch import Delivery, apply_batch
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PayloadError, UnusablePayloadError
from dj_cqrs.models import ReplicaState
from tests import hostile, kombu_fixtures
from tests.dj_replica.models import GoldenParentReplica
from tests.test_rabbitmq_consumer import FakeChannel, FakeConnection

broker = kombu_fixtures.broker

ACTIONS = {hostile.REJECT: handler.Action.REJECT, hostile.DEAD_LETTER: handler.Action.DEAD_LETTER}
GOOD_ROWS = {pk: (f'good{pk}', 0) for pk in hostile.GOOD_PKS}
BAD_COUNT = {
    kind: sum(1 for *_, expected in hostile.BODIES if expected == kind) for kind in ACTIONS
}
IDS = [name for name, *_ in hostile.BODIES]


def rows() -> dict[int, tuple[str, int]]:
    return {r.id: (r.name, r.cqrs_revision) for r in GoldenParentReplica.objects.order_by('id')}


def with_batch_size(settings, size: int) -> None:
    replica = {**settings.CQRS.get('replica', {}), 'CQRS_BATCH_SIZE': size}
    settings.CQRS = {**settings.CQRS, 'replica': replica}


def goods() -> list[bytes]:
    return [hostile.good(pk) for pk in hostile.GOOD_PKS]


def final_lines(lines: list[str]) -> list[str]:
    """The lines that give a bad message its final outcome."""
    return [
        line
        for line in lines
        if "CQRS couldn't be parsed" in line
        or "CQRS couldn't proceed" in line
        or 'CQRS message can never apply' in line
    ]


# ------------------------------------------------------------------------------ the decode


@pytest.mark.parametrize(('name', 'body', 'expected'), hostile.BODIES, ids=IDS)
def test_decode_says_what_is_wrong_with_each_body(name, body, expected, settings):
    """Every key's type is checked at decode (one place); the error is typed and names the key;
    an unusable message keeps its payload so that it can be dead-lettered."""
    replica = get_replica_settings()
    try:
        TransportPayload.decode(
            body, max_size=replica.max_message_size, max_depth=replica.max_message_depth
        )
    except UnusablePayloadError as err:
        assert expected == hostile.DEAD_LETTER, name
        assert isinstance(err.payload, TransportPayload)
        assert any(
            word in str(err) for word in ('instance_pk', 'cqrs_revision', 'cqrs_updated', 'id')
        )
        return
    except PayloadError as err:
        assert expected == hostile.REJECT, name
        assert 'nested deeper' in str(err) or ' must be ' in str(err)
        return
    # Only the replica model knows its pk: these are refused when applied (see below).
    assert name.startswith(('id ', 'id null')), name


def get_replica_settings():
    from dj_cqrs.conf import get_settings

    return get_settings().replica


def test_depth_limit_is_the_setting(settings):
    """CQRS_MAX_MESSAGE_DEPTH is enforced: a body one level over it is refused, at it is not."""
    settings.CQRS = {**settings.CQRS, 'replica': {'CQRS_MAX_MESSAGE_DEPTH': 10}}
    # The envelope is 1 level; meta adds the rest.
    at_limit = json.dumps(hostile.message(1, meta=hostile.nested(9))).encode()
    over = json.dumps(hostile.message(1, meta=hostile.nested(10))).encode()
    assert isinstance(handler.decode(at_limit), TransportPayload)
    outcome = handler.decode(over)
    assert outcome.action is handler.Action.REJECT
    assert outcome.reason == 'body is nested deeper than the limit of 10 levels'
    brackets_in_text = json.dumps(hostile.message(1, meta={'t': '[[[[{{{{' * 10})).encode()
    assert isinstance(handler.decode(brackets_in_text), TransportPayload)


# ---------------------------------------------------------------------- one by one, batched


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(('name', 'body', 'expected'), hostile.BODIES, ids=IDS)
def test_one_by_one_each_bad_body_has_its_outcome_at_once(name, body, expected, settings, cqrs_log):
    """One message per transaction: the bad body is rejected or dead-lettered at once (no
    retry), with one line saying why, and the rows of the good messages stay as they are."""
    with_batch_size(settings, 1)
    for raw in goods():
        assert handler.handle(raw, 'golden_parent').action is handler.Action.ACK
    outcome = handler.handle(body, 'golden_parent')
    assert outcome.action is ACTIONS[expected], name
    assert len(final_lines(cqrs_log())) == 1, cqrs_log()
    assert rows() == GOOD_ROWS


@pytest.mark.django_db(transaction=True)
def test_batched_apply_isolates_every_bad_body(settings, cqrs_log):
    """All bodies in one batch, good ones before and after: each has its own outcome and the
    good ones are applied exactly once."""
    with_batch_size(settings, 100)
    GoldenParentReplica.objects.create(
        id=1, name='good1', cqrs_revision=0, cqrs_updated='2024-01-01T00:00:00Z'
    )
    bodies = (
        [hostile.good(pk) for pk in (2,)] + [b for _, b, _ in hostile.BODIES] + [hostile.good(3)]
    )
    outcomes = apply_batch([Delivery(b, 'golden_parent') for b in bodies])
    actions = [o.action for o in outcomes]
    expected = (
        [handler.Action.ACK] + [ACTIONS[e] for *_, e in hostile.BODIES] + [handler.Action.ACK]
    )
    assert actions == expected
    assert rows() == GOOD_ROWS
    assert len(final_lines(cqrs_log())) == len(hostile.BODIES)


# -------------------------------------------------------------------------------- workers


@pytest.mark.django_db(transaction=True)
def test_rabbitmq_worker_batch_settles_each_delivery_on_its_own(settings):
    """The RabbitMQ worker gets every body in one batch: good ones acked, unusable ones
    published to the dead letters before being removed, undecodable ones rejected; nothing is
    nacked without requeue unless it was dead-lettered first."""
    from dj_cqrs.conf import get_settings
    from dj_cqrs.transport.amqp import topology_for
    from dj_cqrs.transport.rabbit_consumer import Delivery as RabbitDelivery
    from dj_cqrs.transport.rabbit_consumer import RabbitConsumer
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

    settings.CQRS = {
        **settings.CQRS,
        'transport': 'dj_cqrs.transport.RabbitMQTransport',
        'queue': 'replica',
        'replica': {'CQRS_BATCH_SIZE': 100},
    }
    calls: list = []
    source = RabbitConsumer(RabbitMQTransport)
    source.handler_thread = False
    source.topology = topology_for(get_settings())
    source.channel = source.publish_channel = FakeChannel(calls)
    source.connection = FakeConnection()
    consumer = source.loop()

    bodies = goods() + [b for _, b, _ in hostile.BODIES]
    consumer.process([RabbitDelivery(tag, 'golden_parent', b) for tag, b in enumerate(bodies, 1)])

    assert rows() == GOOD_ROWS
    settled = {}
    published = 0
    for call in calls:
        if call[0] == 'publish':
            published += 1
            continue
        tag, requeue = call[1], (call[2] if len(call) > 2 else None)
        if call[0] == 'nack' and requeue is False:
            assert published > 0, f'tag {tag} dropped without a dead letter'
            published -= 1
            settled[tag] = 'dead_letter'
        elif call[0] == 'reject':
            assert requeue is False
            settled[tag] = 'reject'
        else:
            assert call[0] == 'ack', call
            settled[tag] = 'ack'
    expected = ['ack'] * len(hostile.GOOD_PKS) + [e for *_, e in hostile.BODIES]
    assert [settled[tag] for tag in range(1, len(bodies) + 1)] == expected


@pytest.mark.django_db(transaction=True)
def test_kombu_worker_settles_each_bad_body_and_applies_the_good(broker, settings):
    """Over memory://, RabbitMQ and Redis: bad bodies are rejected or dead-lettered once, good
    messages (published after them) are applied, nothing is left in the queue."""
    broker.declare()
    for _, body, _ in hostile.BODIES:
        broker.publish_raw(body, 'golden_parent', 'text/plain')
    for body in goods():
        broker.publish_raw(body, 'golden_parent', 'text/plain')

    def done() -> bool:
        names = broker.event_names()
        return (
            names.count('applied') == len(hostile.GOOD_PKS)
            and names.count('dead_lettered') == BAD_COUNT[hostile.DEAD_LETTER]
            and names.count('rejected') == BAD_COUNT[hostile.REJECT]
        )

    broker.run_worker(until=done, timeout=20)
    assert done(), broker.event_names()
    assert rows() == GOOD_ROWS
    assert broker.get_all(broker.queue) == []
    dead = [json.loads(kombu_fixtures.body_of(m)) for m in broker.get_all(broker.dead_letter_queue)]
    assert len(dead) == BAD_COUNT[hostile.DEAD_LETTER]
    assert all(d['retries'] == 0 for d in dead), 'dead-lettered at once, never retried'


# ------------------------------------------------------------------------------ bulk load


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize('bulk', [True, False], ids=['bulk', 'line by line'])
def test_bulk_load_refuses_each_bad_line_with_its_number(bulk, monkeypatch):
    """``cqrs_bulk_load``: a line with a null, fractional or text pk, or a wrong-typed revision,
    is reported with its line number and loads nothing; the good lines load."""
    from dj_cqrs.management import bulk_load

    if not bulk:
        monkeypatch.setattr(bulk_load, 'default_write_path', lambda model: False)
    good_lines = [json.dumps(json.loads(b)['instance_data']) for b in goods()]
    bad_lines = [json.dumps(data) for _, data in hostile.LOAD_LINES]
    deep = json.dumps({**json.loads(good_lines[0]), 'id': 950, 'x': hostile.nested(100)})
    text = '\n'.join(['golden_parent', good_lines[0], *bad_lines, deep, *good_lines[1:]])
    err = io.StringIO()
    call_command(
        'cqrs_bulk_load', '-i', '-', stdin=io.StringIO(text), stderr=err, stdout=io.StringIO()
    )
    assert rows() == GOOD_ROWS
    report = err.getvalue().splitlines()
    refused = [
        line for line in report if line.startswith(("Instance can't be saved", "Dump file can't"))
    ]
    bad_numbers = list(range(3, 3 + len(bad_lines) + 1))
    # (Type errors are found as a line is read, pk errors as its batch is applied.)
    assert sorted(int(line.split('line ')[1].split('!')[0]) for line in refused) == bad_numbers
    assert report[-1] == f'{len(hostile.GOOD_PKS)} instance(s) loaded.'


# --------------------------------------------------------------------- memory, logs, state


def _peak(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.django_db(transaction=True)
def test_a_large_body_is_not_copied_while_it_is_applied(settings):
    """A 2 MB body of small objects: applying it costs about its decoded size, not three times
    (no deepcopy per message)."""
    with_batch_size(settings, 1)
    body = json.dumps(hostile.message(1, data={'name': 'x'}, meta=[{}] * 500_000)).encode()
    decode_only = _peak(lambda: handler.decode(body))
    whole = _peak(lambda: handler.handle(body, 'golden_parent'))
    assert whole < 1.5 * decode_only, (whole, decode_only)


@pytest.mark.django_db(transaction=True)
def test_a_hook_that_changes_the_data_does_not_change_the_dead_letter(settings, monkeypatch):
    """Without the copy, a hook may change the data it is given: the retry or dead letter
    still carries the message as it came."""
    from dj_cqrs.replica.manager import ReplicaManager

    def mutate_and_fail(self, master_data, *args, **kwargs):
        master_data['name'] = 'changed by the hook'
        master_data.pop('cqrs_revision')
        return None

    monkeypatch.setattr(ReplicaManager, 'save_instance', mutate_and_fail)
    with_batch_size(settings, 1)
    outcome = handler.handle(hostile.good(1), 'golden_parent')
    assert outcome.action is handler.Action.RETRY
    assert outcome.payload.instance_data == json.loads(hostile.good(1))['instance_data']


@pytest.mark.django_db(transaction=True)
def test_log_lines_quote_a_huge_pk_and_correlation_id_shortly(settings, caplog):
    """A failing message with a 1 MB correlation id and pk writes a few kB of log, not MBs."""
    with_batch_size(settings, 1)
    caplog.set_level(logging.DEBUG, logger='django-cqrs')
    huge = 'x' * 1_000_000
    body = json.dumps(hostile.message(huge, correlation_id=huge)).encode()
    outcome = handler.handle(body, 'golden_parent')
    assert outcome.action is handler.Action.DEAD_LETTER
    from dj_cqrs.transport.mixins import LoggingMixin

    LoggingMixin.log_dead_letter(outcome.payload)
    written = sum(len(r.getMessage()) for r in caplog.records)
    assert 0 < written < 5_000, written


@pytest.mark.django_db(transaction=True)
def test_replica_state_keeps_working_with_a_300_character_pk():
    """ReplicaState's last_pk is cut to its column: a long text pk never breaks the state
    writes (PostgreSQL refuses a longer value), so cqrs_status stays current."""
    from django.utils import timezone

    from dj_cqrs.observability import lag

    tracker = lag.LagTracker(background=False)
    data = {'id': 1, 'cqrs_revision': 3, 'cqrs_updated': timezone.now().isoformat()}
    tracker.record(TransportPayload('SAVE', 'golden_parent', data, 'k' * 300))
    tracker.flush()
    state = ReplicaState.objects.get(cqrs_id='golden_parent')
    assert (state.applied_count, state.last_revision) == (1, 3)
    assert state.last_pk == 'k' * 255


def test_rejecting_a_huge_body_quotes_only_its_head(cqrs_log):
    """A 20 MB body over CQRS_MAX_MESSAGE_SIZE is rejected with a short line, without building
    the ``repr`` of the whole body first."""
    body = b'{"x": "' + b'\xc3\xa9' * 10_000_000 + b'"}'
    peak = _peak(lambda: handler.decode(body))
    assert peak < 2_000_000, peak
    (line,) = cqrs_log()
    assert line.startswith('ERROR CQRS couldn\'t be parsed: b\'{"x": "\\xc3\\xa9')
    assert len(line) < 2_500 and line.endswith('over the limit of 8388608 bytes)')
