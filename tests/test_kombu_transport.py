"""KombuTransport: publish, consume and the whole retry / dead-letter lifecycle.

Each test runs over Kombu's ``memory://`` transport, RabbitMQ and Redis where it fits.
"""

from __future__ import annotations

import datetime
import json

import pytest
from django.utils import timezone

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport.kombu import KombuTransport
from tests import kombu_fixtures
from tests.dj_replica.models import GoldenFieldsReplica, GoldenParentReplica
from tests.kombu_fixtures import body_of

broker = kombu_fixtures.broker

pytestmark = pytest.mark.django_db(transaction=True)


def parent(pk, name='Parent ü/1', revision=0, **kwargs):
    data = {'id': pk, 'name': name, 'cqrs_revision': revision}
    data['cqrs_updated'] = '2024-02-29 13:45:30.123456+00:00'
    kwargs.setdefault('expires', timezone.now() + datetime.timedelta(days=1))
    return TransportPayload('SAVE', 'golden_parent', data, pk, **kwargs)


def failing(pk, **kwargs):
    data = {'id': pk, 'name': 'fails', 'cqrs_revision': 0}
    data['cqrs_updated'] = '2024-02-29 13:45:30+00:00'
    kwargs.setdefault('expires', timezone.now() + datetime.timedelta(days=1))
    return TransportPayload('SAVE', 'golden_fail', data, pk, **kwargs)


def test_published_message_is_applied_on_the_replica(broker, cqrs_log):
    """A message published by KombuTransport is consumed, applied and acked."""
    broker.declare()
    assert KombuTransport.produce(parent(1)) is True
    assert KombuTransport.produce(parent(2, name='two')) is True

    broker.run_worker(until=lambda: GoldenParentReplica.objects.count() == 2)

    assert dict(GoldenParentReplica.objects.values_list('id', 'name')) == {
        1: 'Parent ü/1',
        2: 'two',
    }
    assert 'INFO CQRS is published: pk = 1 (golden_parent), correlation_id = None.' in cqrs_log()
    assert 'INFO CQRS is applied: pk = 2 (golden_parent), correlation_id = None.' in cqrs_log()
    assert broker.get_all(broker.queue) == []


def test_body_and_routing_key_are_the_wire_format(broker):
    """The body is the exact wire body and a broadcast goes out with the key ``<cqrs_id>``."""
    broker.declare()
    payload = parent(7, meta={'nested': [1, 2.5, None]}, correlation_id='corr-7')
    KombuTransport.produce(payload)

    (message,) = broker.get_all(broker.queue)
    assert body_of(message) == payload.encode()
    assert message.delivery_info['routing_key'] == 'golden_parent'
    assert message.content_type == 'text/plain'
    decoded = json.loads(message.body)
    assert decoded['meta'] == {'nested': [1, 2.5, None]}
    assert decoded['retries'] == 0
    assert decoded['expires'] == payload.to_dict()['expires']


def test_meta_and_direct_sync_queue_survive_consumption(broker):
    """meta reaches CQRS_META replicas; a SYNC to this queue is routed and applied."""
    broker.declare()
    data = {'id': 5, 'title': 't', 'amount': 3, 'cqrs_revision': 0}
    data['cqrs_updated'] = '2024-02-29 13:45:30+00:00'
    expires = timezone.now() + datetime.timedelta(days=1)
    meta = {'source': 'kombu', 'nested': {'ü/é': [1, None]}}
    KombuTransport.produce(
        TransportPayload(
            'SYNC', 'golden_fields', data, 5, queue=broker.queue, meta=meta, expires=expires
        )
    )

    broker.run_worker(until=lambda: GoldenFieldsReplica.objects.exists())

    row = GoldenFieldsReplica.objects.get()
    assert (row.title, row.last_meta, row.last_sync) == ('t', meta, True)


def test_failed_message_is_delayed_requeued_then_dead_lettered(broker, cqrs_log):
    """A failing message waits CQRS_RETRY_DELAY, comes back with retries + 1, then dead-letters."""
    broker.declare()
    KombuTransport.produce(failing(1, meta={'m': 1}, correlation_id='c-1'))

    took = broker.run_worker(until=lambda: 'dead_lettered' in broker.event_names())

    assert broker.event_names() == ['failed', 'delayed', 'requeued', 'failed', 'dead_lettered']
    assert took >= 1.0
    lines = cqrs_log()
    assert 'WARNING CQRS is requeued: pk = 1 (golden_fail), correlation_id = c-1.' in lines
    assert (
        'WARNING CQRS is added to dead letter queue: pk = 1 (golden_fail), correlation_id = c-1.'
        in lines
    )
    assert any(
        line.startswith(
            'WARNING CQRS is delayed: pk = 1 (golden_fail), correlation_id = c-1, '
            'delay = 1 sec, eta = '
        )
        for line in lines
    )
    assert broker.get_all(broker.queue) == []
    (dead,) = broker.get_all(broker.dead_letter_queue)
    assert dead.delivery_info['routing_key'] == f'cqrs.{broker.dead_letter_queue}.golden_fail'
    body = json.loads(dead.body)
    assert (body['retries'], body['meta'], body['correlation_id']) == (1, {'m': 1}, 'c-1')
    if broker.name == 'amqp':
        assert dead.properties['expiration'] == '864000000'


def test_waiting_retry_does_not_block_other_messages(broker):
    """While a failed message waits for its retry, the next messages are applied."""
    broker.declare()
    KombuTransport.produce(failing(1))
    KombuTransport.produce(parent(1))

    broker.run_worker(until=lambda: 'requeued' in broker.event_names())

    names = broker.event_names()
    assert names.index('applied') < names.index('requeued')
    assert GoldenParentReplica.objects.filter(pk=1).exists()


def test_expired_message_goes_to_the_dead_letters(broker):
    """An expired message is not applied; it is moved to the dead-letter queue."""
    broker.declare()
    KombuTransport.produce(parent(3, expires=timezone.now() - datetime.timedelta(seconds=1)))

    broker.run_worker(until=lambda: 'dead_lettered' in broker.event_names())

    assert not GoldenParentReplica.objects.exists()
    assert [m.delivery_info['routing_key'] for m in broker.get_all(broker.dead_letter_queue)] == [
        f'cqrs.{broker.dead_letter_queue}.golden_parent'
    ]


def test_bad_bodies_and_pickle_are_rejected_and_the_worker_goes_on(broker, cqrs_log):
    """Invalid JSON and pickled bodies are rejected (never unpickled); later messages apply."""
    import pickle

    broker.declare()
    broker.publish_raw(b'{not json', 'golden_parent', 'text/plain')
    broker.publish_raw(pickle.dumps({'x': 1}), 'golden_parent', 'application/x-python-serialize')
    KombuTransport.produce(parent(4))

    broker.run_worker(until=lambda: GoldenParentReplica.objects.exists())

    assert broker.event_names() == ['rejected', 'rejected', 'applied']
    assert any("CQRS couldn't be parsed: b'{not json'" in line for line in cqrs_log())
    assert any("'application/x-python-serialize' is not accepted" in line for line in cqrs_log())
    assert broker.get_all(broker.queue) == []
    assert broker.get_all(broker.dead_letter_queue) == []


def test_unexpected_consumer_error_keeps_the_message_in_the_dead_letters(broker, monkeypatch):
    """An exception escaping the handler does not end the worker and the message is kept."""
    from dj_cqrs.consumer import loop as consumer_loop

    real_batch = consumer_loop.apply_batch

    def broken_batch(deliveries, sender=None):
        # A bug on pk 1, whether it comes alone or in a batch (then each is retried alone).
        if any(json.loads(d.body)['instance_pk'] == 1 for d in deliveries):
            raise RuntimeError('bug')
        return real_batch(deliveries, sender=sender)

    monkeypatch.setattr(consumer_loop, 'apply_batch', broken_batch)
    broker.declare()
    KombuTransport.produce(parent(1))
    KombuTransport.produce(parent(2))

    broker.run_worker(until=lambda: GoldenParentReplica.objects.exists())

    assert list(GoldenParentReplica.objects.values_list('id', flat=True)) == [2]
    (dead,) = broker.get_all(broker.dead_letter_queue)
    assert json.loads(dead.body)['instance_pk'] == 1


def test_worker_restricted_to_cqrs_ids_binds_only_those(broker):
    """``consume(cqrs_ids=...)`` binds only the chosen models: other messages never arrive."""
    import threading

    from dj_cqrs.transport.kombu_consumer import KombuWorker

    worker = KombuWorker(cqrs_ids={'golden_parent'})
    data = {'id': 5, 'title': 't', 'amount': 3, 'cqrs_revision': 0}
    data['cqrs_updated'] = '2024-02-29 13:45:30+00:00'

    def publish_when_bound():
        if worker.consuming.wait(10):
            KombuTransport.produce(TransportPayload('SAVE', 'golden_fields', data, 5))
            KombuTransport.produce(parent(1))

    thread = threading.Thread(target=publish_when_bound)
    thread.start()
    broker.run_worker(until=lambda: GoldenParentReplica.objects.exists(), worker=worker)
    thread.join(10)

    assert GoldenParentReplica.objects.count() == 1
    assert not GoldenFieldsReplica.objects.exists()
    assert broker.get_all(broker.queue) == []


def test_subclass_log_overrides_are_called_and_can_call_super(cqrs_log):
    """As in the original, KombuTransport is a LoggingMixin: a subclass that records
    consumption through ``log_consumed`` & co. is called, and ``super()`` writes the line."""
    from dj_cqrs.transport.kombu_consumer import KombuWorker
    from dj_cqrs.transport.mixins import LoggingMixin

    seen = []

    class Recording(KombuTransport):
        @classmethod
        def log_produced(cls, payload):
            seen.append(('produced', payload.pk))
            super().log_produced(payload)

        @classmethod
        def log_consumed(cls, payload):
            seen.append(('consumed', payload.pk))
            super().log_consumed(payload)

        @classmethod
        def log_consumed_accepted(cls, payload):
            seen.append(('accepted', payload.pk))
            super().log_consumed_accepted(payload)

    assert issubclass(KombuTransport, LoggingMixin)
    for memory in kombu_fixtures.make_broker('memory'):
        memory.declare()
        assert Recording.produce(parent(3)) is True
        memory.run_worker(
            until=lambda: GoldenParentReplica.objects.filter(pk=3).exists(),
            worker=KombuWorker(sender=Recording),
        )
    assert seen == [('produced', 3), ('consumed', 3), ('accepted', 3)]
    lines = cqrs_log()
    assert 'INFO CQRS is published: pk = 3 (golden_parent), correlation_id = None.' in lines
    assert 'INFO CQRS is received: pk = 3 (golden_parent), correlation_id = None.' in lines
    assert 'INFO CQRS is applied: pk = 3 (golden_parent), correlation_id = None.' in lines


def test_a_dead_letter_whose_publish_raises_is_kept_not_lost(broker, monkeypatch, cqrs_log):
    """The dead-letter publish raises (not a connection failure): the message goes back to the
    queue with an error line, is tried again, and reaches the dead letters; the worker lives."""
    from dj_cqrs.transport import kombu as kombu_module

    real_publish = kombu_module.publish
    attempts = []

    def publish_fails_once(producer, payload, **options):
        attempts.append(payload.is_dead_letter)
        if len(attempts) == 1:
            raise ValueError('cannot publish this one')
        return real_publish(producer, payload, **options)

    broker.declare()
    KombuTransport.produce(failing(1, retries=1))
    monkeypatch.setattr(kombu_module, 'publish', publish_fails_once)

    broker.run_worker(until=lambda: 'dead_lettered' in broker.event_names(), timeout=8)

    assert attempts == [True, True]
    (dead,) = broker.get_all(broker.dead_letter_queue)
    assert json.loads(dead.body)['instance_pk'] == 1
    assert broker.get_all(broker.queue) == []
    assert any("couldn't be added to dead letter queue: pk = 1" in line for line in cqrs_log())
