"""RabbitMQTransport.produce against the real broker: confirms, routing, failures."""

from __future__ import annotations

import os
import threading

import pytest

from dj_cqrs import signals
from dj_cqrs.constants import SignalType
from dj_cqrs.exceptions import PublishError
from dj_cqrs.transport import rabbit_mq
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.rabbit_capture import URL, capture_queue, payload
from tests.services import require


@pytest.fixture
def broker(settings):
    """A private exchange with a capture queue bound to every key; settings point at it."""
    require('rabbitmq')
    with capture_queue('cqrs_ut', ['#']) as drain:
        settings.CQRS = {
            'transport': 'dj_cqrs.transport.RabbitMQTransport',
            'url': URL,
            'exchange': drain.exchange,
            'queue': 'svc',
            'master': {'CQRS_PUBLISH_RETRIES': 1, 'CQRS_PUBLISH_CONFIRMS': 'sync'},
        }
        yield drain
        RabbitMQTransport.clean_connection()


def test_published_message_has_the_original_key_properties_and_body(broker):
    """A SAVE goes out as <cqrs_id>, text/plain, persistent, with exactly encode()'s bytes."""
    message = payload()
    assert RabbitMQTransport.produce(message) is True
    [(key, props, body)] = broker()
    assert key == 'golden_parent'
    assert (props.content_type, props.delivery_mode, props.expiration) == ('text/plain', 2, None)
    assert (props.headers, props.message_id, props.correlation_id) == (None, None, None)
    assert body == message.encode()


def test_routing_keys_for_direct_sync_requeue_and_dead_letter(broker):
    """SYNC to a queue, requeue and dead letter use the original's routing keys."""
    RabbitMQTransport.produce(payload(signal_type=SignalType.SYNC, queue='other'))
    requeue = payload()
    requeue.is_requeue = True
    RabbitMQTransport.produce(requeue)
    dead = payload()
    dead.is_dead_letter = True
    RabbitMQTransport.produce(dead)
    assert [m[0] for m in broker()] == [
        'cqrs.other.golden_parent',
        'cqrs.svc.golden_parent',
        'cqrs.dead_letter_svc.golden_parent',
    ]


def test_one_connection_per_process_is_reused(broker):
    """Consecutive publishes share one connection (no connection per message)."""
    RabbitMQTransport.produce(payload(1))
    first = rabbit_mq._publisher._connection
    RabbitMQTransport.produce(payload(2))
    assert rabbit_mq._publisher._connection is first
    assert len(broker()) == 2


def test_publisher_reconnects_after_its_connection_is_gone(broker):
    """A closed connection is replaced on the next publish; nothing is lost."""
    RabbitMQTransport.produce(payload(1))
    rabbit_mq._publisher._connection.close()
    RabbitMQTransport.produce(payload(2))
    assert [m[2] for m in broker()] == [payload(1).encode(), payload(2).encode()]


def test_threads_share_the_publisher_safely(broker):
    """8 threads publishing at once: every message arrives once, intact."""
    errors = []

    def publish(thread):
        try:
            for i in range(25):
                RabbitMQTransport.produce(payload(thread * 1000 + i))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=publish, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    bodies = [m[2] for m in broker()]
    assert len(bodies) == 200
    assert len(set(bodies)) == 200


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_forked_child_opens_its_own_connection(broker):
    """After fork the child publishes on a new connection; the parent's keeps working."""
    RabbitMQTransport.produce(payload(1))
    parent_connection = rabbit_mq._publisher._connection
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            RabbitMQTransport.produce(payload(2))
            code = 0 if rabbit_mq._publisher._connection is not parent_connection else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    RabbitMQTransport.produce(payload(3))
    assert rabbit_mq._publisher._connection is parent_connection
    assert sorted(m[2] for m in broker()) == sorted(payload(i).encode() for i in (1, 2, 3))


def test_published_signal_is_sent_with_duration(broker):
    """message_published carries the payload and how long the confirmed publish took."""
    seen = []

    def receiver(sender, payload, duration, **kwargs):
        seen.append((sender, payload.pk, duration))

    signals.message_published.connect(receiver)
    try:
        RabbitMQTransport.produce(payload(5))
    finally:
        signals.message_published.disconnect(receiver)
    [(sender, pk, duration)] = seen
    assert (sender, pk) == (RabbitMQTransport, 5)
    assert 0 <= duration < 10


def test_unroutable_message_is_reported_not_silently_dropped(broker, settings, cqrs_log):
    """A message no queue is bound to is returned by the broker and logged as unroutable."""
    settings.CQRS = {**settings.CQRS, 'exchange': f'{broker.exchange}_empty'}
    assert RabbitMQTransport.produce(payload(7)) is False
    assert any(
        line.startswith(
            'WARNING CQRS is unroutable: pk = 7 (golden_parent), routing_key = golden_parent.'
        )
        for line in cqrs_log()
    )


def test_unreachable_broker_raises_publish_error_after_bounded_retries(settings, cqrs_log):
    """Broker down: one WARNING per retry, then PublishError carrying the payload, with the
    password masked; never a silent drop (the outbox catches it)."""
    settings.CQRS = {
        'transport': 'dj_cqrs.transport.RabbitMQTransport',
        'url': 'amqp://guest:s3cr3t@127.0.0.1:1/',
        'queue': 'svc',
        'master': {'CQRS_PUBLISH_RETRIES': 2, 'CQRS_PUBLISH_CONFIRMS': 'sync'},
    }
    with pytest.raises(PublishError) as err:
        RabbitMQTransport.produce(payload(9))
    assert err.value.payload.pk == 9
    assert 's3cr3t' not in str(err.value)
    assert 'amqp://guest:****@127.0.0.1:1/' in str(err.value)
    warnings = [line for line in cqrs_log() if 'Reconnect...' in line]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "WARNING CQRS couldn't be published: pk = 9 (golden_parent). Error: "
    )
    assert not any('s3cr3t' in line for line in cqrs_log())


def test_backoff_is_bounded():
    """Retries start at once and wait at most 2 s between attempts."""
    from dj_cqrs.transport.rabbit_mq import backoff

    assert backoff(0) == 0
    assert [backoff(n) for n in range(1, 8)] == sorted(backoff(n) for n in range(1, 8))
    assert max(backoff(n) for n in range(50)) == 2.0
