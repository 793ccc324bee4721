"""The RabbitMQ consumer's decisions carried out, with the broker replaced at the channel edge."""

from __future__ import annotations

import json
import time

import pika
import pytest

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.delay import DelayQueue
from dj_cqrs.transport.amqp import topology_for
from dj_cqrs.transport.rabbit_consumer import Delivery, RabbitConsumer
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.dj_replica.models import GoldenParentReplica

UPDATED = '2024-01-01 00:00:00+00:00'


class FakeChannel:
    """Records what the consumer does with deliveries, in order."""

    def __init__(self, calls, publish_error=None):
        self.calls = calls
        self.publish_error = publish_error

    def basic_ack(self, tag, multiple=False):
        self.calls.append(('ack', tag))

    def basic_reject(self, tag, requeue=True):
        self.calls.append(('reject', tag, requeue))

    def basic_nack(self, tag, multiple=False, requeue=True):
        self.calls.append(('nack', tag, requeue))

    def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False):
        if self.publish_error is not None:
            raise self.publish_error
        self.calls.append(('publish', routing_key, json.loads(body), properties.expiration))


class FakeConnection:
    def __init__(self):
        self.pumped = 0

    def process_data_events(self, time_limit=0):
        self.pumped += 1
        time.sleep(min(time_limit or 0, 0.01))

    def add_callback_threadsafe(self, callback):
        callback()


@pytest.fixture
def calls():
    return []


@pytest.fixture
def consumer(settings, calls):
    settings.CQRS = {
        **settings.CQRS,
        'transport': 'dj_cqrs.transport.RabbitMQTransport',
        'queue': 'replica',
    }
    source = RabbitConsumer(RabbitMQTransport)
    source.handler_thread = False
    source.topology = topology_for(get_settings())
    source.channel = FakeChannel(calls)
    source.publish_channel = FakeChannel(calls)
    source.connection = FakeConnection()
    return source.loop()


def body(cqrs_id='golden_parent', pk=1, retries=0, expires='2100-01-01T00:00:00+00:00', **kw):
    data = {'id': pk, 'name': 'n', 'cqrs_revision': 0, 'cqrs_updated': UPDATED}
    message = {
        'signal_type': 'SAVE',
        'cqrs_id': cqrs_id,
        'instance_data': data,
        'previous_data': None,
        'instance_pk': pk,
        'correlation_id': None,
        'retries': retries,
        'expires': expires,
        'meta': None,
        **kw,
    }
    return json.dumps(message).encode()


def deliver(consumer, raw, tag=1, routing_key='golden_parent', redelivered=False):
    consumer.process([Delivery(tag, routing_key, raw, redelivered)])


@pytest.mark.django_db
def test_applied_message_is_acked(consumer, calls):
    """A good message is applied to the replica and acknowledged."""
    deliver(consumer, body())
    assert calls == [('ack', 1)]
    assert GoldenParentReplica.objects.get(id=1).name == 'n'


@pytest.mark.django_db
@pytest.mark.parametrize('raw', [b'not json', b'\xff\xfe', b'', b'[]', b'{"cqrs_id": "x"}'])
def test_unusable_body_is_rejected_without_requeue(consumer, calls, raw):
    """Undecodable or incomplete bodies are rejected (not requeued, not dead-lettered)."""
    deliver(consumer, raw)
    assert calls == [('reject', 1, False)]


@pytest.mark.django_db
def test_missing_routing_key_and_properties_do_not_break_the_loop(consumer, calls):
    """A delivery without routing key (or odd method object) is still handled."""

    class Method:
        delivery_tag = 4

    consumer.source._on_message(None, Method(), None, body())
    consumer.process([consumer.source.pending.popleft()])
    assert calls == [('ack', 4)]


@pytest.mark.django_db
def test_failed_message_is_delayed_then_republished_before_the_original_is_dropped(consumer, calls):
    """A failure waits in the delay queue; when due, the copy (retries + 1, requeue key) is
    published with a confirm BEFORE the original is nacked."""
    delayed = []

    def on_delayed(sender, payload, delay, **kwargs):
        delayed.append((payload.pk, delay, kwargs['retries']))

    signals.message_delayed.connect(on_delayed)
    try:
        deliver(consumer, body('golden_fail', pk=3), tag=7, routing_key='golden_fail')
    finally:
        signals.message_delayed.disconnect(on_delayed)
    assert calls == [], 'held, not acked, while it waits'
    assert delayed == [(3, 0, 0)]
    consumer.settler.requeue_due()
    [published, nacked] = calls
    assert published[0] == 'publish'
    assert published[1] == 'cqrs.replica.golden_fail'
    assert published[2]['retries'] == 1
    assert published[3] is None
    assert nacked == ('nack', 7, False)


@pytest.mark.django_db
def test_exhausted_retries_go_to_the_dead_letter_queue_with_ttl(consumer, calls):
    """At CQRS_MAX_RETRIES the message is published to the DLQ key with the 10-day
    expiration and the same retry count, then the original is removed."""
    deliver(consumer, body('golden_fail', pk=3, retries=2), tag=8, routing_key='golden_fail')
    assert calls == [
        (
            'publish',
            'cqrs.dead_letter_replica.golden_fail',
            json.loads(body('golden_fail', pk=3, retries=2)),
            '864000000',
        ),
        ('nack', 8, False),
    ]


@pytest.mark.django_db
def test_dead_message_ttl_none_means_no_expiration(consumer, calls, settings):
    """dead_message_ttl None publishes dead letters without expiration."""
    settings.CQRS = {**settings.CQRS, 'replica': {'CQRS_MAX_RETRIES': 0, 'dead_message_ttl': None}}
    deliver(consumer, body('golden_fail', pk=3), tag=2, routing_key='golden_fail')
    assert calls[0][3] is None
    assert calls[1] == ('nack', 2, False)


@pytest.mark.django_db
def test_expired_message_is_dead_lettered_not_applied(consumer, calls):
    """A message past its `expires` goes to the DLQ."""
    deliver(consumer, body(expires='2001-01-01T00:00:00+00:00'), tag=5)
    assert [c[:2] for c in calls] == [
        ('publish', 'cqrs.dead_letter_replica.golden_parent'),
        ('nack', 5),
    ]
    assert not GoldenParentReplica.objects.exists()


@pytest.mark.django_db
def test_failed_republish_keeps_the_original(consumer, calls):
    """If the dead-letter publish fails (connection lost), the original is neither acked nor
    nacked: the error reaches the reconnect loop and the broker redelivers it."""
    consumer.source.publish_channel = FakeChannel(calls, pika.exceptions.StreamLostError('gone'))
    with pytest.raises(pika.exceptions.StreamLostError):
        deliver(consumer, body('golden_fail', pk=3, retries=2), routing_key='golden_fail')
    assert calls == []


@pytest.mark.django_db
def test_unroutable_dead_letter_is_rejected_with_a_log_line(consumer, calls, cqrs_log):
    """No DLQ binding for the id: the message is rejected with an ERROR line saying so."""

    class Returned:
        method = type('M', (), {'routing_key': 'x'})()

    returned = pika.exceptions.UnroutableError([Returned()])
    consumer.source.publish_channel = FakeChannel(calls, returned)
    deliver(consumer, body('golden_fail', pk=3, retries=2), tag=6, routing_key='golden_fail')
    assert calls == [('reject', 6, False)]
    assert any("couldn't be added to dead letter queue" in line for line in cqrs_log())


@pytest.mark.django_db
def test_a_bug_in_the_handler_never_kills_the_worker(consumer, calls, monkeypatch):
    """An unexpected exception: the message is kept in the dead letters (never dropped, even
    when redelivered); the loop goes on."""

    def broken(deliveries):
        raise RuntimeError('bug')

    monkeypatch.setattr(consumer, 'decide', broken)
    deliver(consumer, body(pk=1), tag=1)
    deliver(consumer, body(pk=2), tag=2, redelivered=True)
    assert [c[:2] for c in calls] == [
        ('publish', 'cqrs.dead_letter_replica.golden_parent'),
        ('nack', 1),
        ('publish', 'cqrs.dead_letter_replica.golden_parent'),
        ('nack', 2),
    ]
    assert [c[2]['instance_pk'] for c in calls if c[0] == 'publish'] == [1, 2]


@pytest.mark.django_db
def test_a_crash_in_one_message_of_a_batch_costs_no_other(consumer, calls, monkeypatch, settings):
    """The batch raises because of one delivery: the others are applied and acked, the bad one
    is dead-lettered; no delivery is nacked without requeue unless it was dead-lettered."""
    from dj_cqrs.consumer import batch, handler

    real_apply = handler.apply

    def crash_on_pk_2(payload, sender=None):
        if payload.pk == 2:
            raise TypeError('bug for pk 2')
        return real_apply(payload, sender=sender)

    settings.CQRS = {**settings.CQRS, 'replica': {'CQRS_BATCH_SIZE': 10}}
    monkeypatch.setattr(handler, 'apply', crash_on_pk_2)
    monkeypatch.setattr(batch, 'bulk_eligible', lambda model: False)
    consumer.process([Delivery(tag, 'golden_parent', body(pk=tag)) for tag in (1, 2, 3)])
    assert sorted(GoldenParentReplica.objects.values_list('id', flat=True)) == [1, 3]
    assert ('ack', 1) in calls and ('ack', 3) in calls
    assert [c[:2] for c in calls if c[1] == 2 or c[0] == 'publish'] == [
        ('publish', 'cqrs.dead_letter_replica.golden_parent'),
        ('nack', 2),
    ]


@pytest.mark.django_db
def test_full_delay_queue_requeues_the_earliest_at_once(consumer, calls, settings):
    """With delay_queue_max_size 1, a second failure pushes the first out immediately."""
    settings.CQRS = {
        **settings.CQRS,
        'replica': {'CQRS_RETRY_DELAY': 60, 'delay_queue_max_size': 1},
    }
    consumer.settler.delay_queue = DelayQueue(max_size=1)
    deliver(consumer, body('golden_fail', pk=1), tag=1, routing_key='golden_fail')
    deliver(consumer, body('golden_fail', pk=2), tag=2, routing_key='golden_fail')
    assert [c[:2] for c in calls] == [('publish', 'cqrs.replica.golden_fail'), ('nack', 1)]
    assert consumer.settler.delay_queue.qsize() == 1


def test_heartbeats_are_answered_while_a_handler_works(consumer):
    """The connection keeps processing events while a slow handler runs in the helper thread."""
    source = consumer.source
    source.handler_thread = True
    try:
        assert source.call(lambda _: time.sleep(0.3) or 'done', []) == 'done'
    finally:
        source._executor.shutdown()
    assert source.connection.pumped >= 5
