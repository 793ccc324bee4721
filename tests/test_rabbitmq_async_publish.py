"""RabbitMQTransport with CQRS_PUBLISH_CONFIRMS='async' against the real broker."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

import pytest
from django.db import transaction

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.models import OutboxMessage
from dj_cqrs.transport import async_publisher
from dj_cqrs.transport.base import waiting_for_confirms
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.rabbit_capture import URL, capture_queue, payload
from tests.services import require


def _settings(exchange: str, confirms: str = 'async') -> dict:
    return {
        'transport': 'dj_cqrs.transport.RabbitMQTransport',
        'url': URL,
        'exchange': exchange,
        'queue': 'svc',
        'master': {'CQRS_PUBLISH_RETRIES': 3, 'CQRS_PUBLISH_CONFIRMS': confirms},
    }


@pytest.fixture
def broker(settings):
    """A private exchange with a capture queue bound to ``golden_parent`` keys; async mode on."""
    require('rabbitmq')
    with capture_queue('cqrs_ut_async', ['#.golden_parent', 'golden_parent']) as drain:
        settings.CQRS = _settings(drain.exchange)
        yield drain
        assert async_publisher.flush(10)
        RabbitMQTransport.clean_connection()


def test_setting_is_validated(settings):
    """A bad CQRS_PUBLISH_CONFIRMS raises ConfigurationError naming the key; default is async."""
    settings.CQRS = _settings('x', confirms='sync')
    assert get_settings().master.publish_confirms == 'sync'
    settings.CQRS = {**_settings('x'), 'master': {'CQRS_PUBLISH_CONFIRMS': 'later'}}
    with pytest.raises(ConfigurationError, match='CQRS_PUBLISH_CONFIRMS'):
        get_settings()
    settings.CQRS = {**_settings('x'), 'master': {}}
    assert get_settings().master.publish_confirms == 'async'


def test_async_messages_match_sync_mode(broker, settings):
    """Async mode sends the same routing keys, properties and bodies as sync mode."""
    messages = [payload(1)]
    sync = payload(2, signal_type=SignalType.SYNC, queue='other')
    requeue = payload(3)
    requeue.is_requeue = True
    dead = payload(4)
    dead.is_dead_letter = True
    messages += [sync, requeue, dead]

    for message in messages:
        assert RabbitMQTransport.produce(message) is True
    assert async_publisher.flush(10)
    got_async = broker()

    settings.CQRS = _settings(broker.exchange, confirms='sync')
    for message in messages:
        assert RabbitMQTransport.produce(message) is True
    got_sync = broker()

    def shape(got):
        return [
            (key, p.content_type, p.delivery_mode, p.expiration, p.headers, body)
            for key, p, body in got
        ]

    assert shape(got_async) == shape(got_sync)
    assert [m[0] for m in got_async] == [
        'golden_parent',
        'cqrs.other.golden_parent',
        'cqrs.svc.golden_parent',
        'cqrs.dead_letter_svc.golden_parent',
    ]
    assert got_async[0][2] == messages[0].encode()


def test_many_publishes_are_all_confirmed(broker):
    """2000 publishes return at once; after flush all are on the queue and signalled acked."""
    acked = []

    def on_published(sender, payload, **kwargs):
        acked.append(payload.pk)

    signals.message_published.connect(on_published)
    try:
        began = time.monotonic()
        for pk in range(2000):
            RabbitMQTransport.produce(payload(pk))
        submitted = time.monotonic() - began
        assert async_publisher.flush(15)
    finally:
        signals.message_published.disconnect(on_published)
    assert sorted(acked) == list(range(2000))
    deadline = time.monotonic() + 5
    while broker.count() < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.count() == 2000
    assert submitted < 5  # no per-message confirm wait in the caller


def test_unroutable_is_logged_not_signalled(broker, caplog):
    """A message nobody is bound to is logged as unroutable and not reported as published."""
    acked = []

    def on_published(sender, payload, **kwargs):
        acked.append(payload.pk)

    signals.message_published.connect(on_published)
    caplog.set_level(logging.WARNING)
    try:
        RabbitMQTransport.produce(payload(7, cqrs_id='nobody_listens'))
        RabbitMQTransport.produce(payload(8))
        assert async_publisher.flush(10)
    finally:
        signals.message_published.disconnect(on_published)
    assert any(
        'CQRS is unroutable: pk = 7 (nobody_listens), routing_key = nobody_listens' in r.message
        for r in caplog.records
    )
    assert acked == [8]
    assert [m[2] for m in broker()] == [payload(8).encode()]


def _close_publisher_connection() -> None:
    name = f'dj_cqrs async publisher (pid {os.getpid()})'
    listed = subprocess.run(
        ['rabbitmqctl', 'list_connections', 'pid', 'client_properties', '-q', '--no-table-headers'],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    pids = [line.split('\t')[0] for line in listed.splitlines() if name in line]
    assert pids, listed
    subprocess.run(
        ['rabbitmqctl', 'close_connection', pids[0], 'test: broker drops the publisher'],
        capture_output=True,
        timeout=20,
        check=True,
    )


@pytest.mark.django_db(transaction=True)
def test_connection_killed_mid_stream_loses_nothing(broker, caplog):
    """The broker closes the publisher's connection mid-stream: every message arrives or is kept."""
    total = 1500
    RabbitMQTransport.produce(payload(0))
    assert async_publisher.flush(10)
    stop = threading.Event()

    def produce_all():
        for pk in range(1, total):
            RabbitMQTransport.produce(payload(pk))
            time.sleep(0.002)
        stop.set()

    producer = threading.Thread(target=produce_all)
    caplog.set_level(logging.WARNING)
    producer.start()
    time.sleep(0.3)
    _close_publisher_connection()
    producer.join(20)
    assert stop.is_set()
    assert async_publisher.flush(15)
    assert any('async publisher connection closed' in r.message for r in caplog.records)
    arrived = {TransportPayload.decode(body).pk for _, _, body in broker()}
    kept = {int(pk) for pk in OutboxMessage.objects.values_list('instance_pk', flat=True)}
    assert arrived | kept == set(range(total))


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_forked_child_starts_its_own_publisher(broker):
    """A forked child publishes through its own thread; the parent's keeps working."""
    RabbitMQTransport.produce(payload(1))
    assert async_publisher.flush(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            RabbitMQTransport.produce(payload(2))
            code = 0 if async_publisher.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    RabbitMQTransport.produce(payload(3))
    assert async_publisher.flush(10)
    assert sorted(TransportPayload.decode(m[2]).pk for m in broker()) == [1, 2, 3]


@pytest.mark.django_db(transaction=True)
def test_unreachable_broker_keeps_messages_in_outbox(settings, caplog):
    """With no broker to connect to, messages are kept in the outbox; the password is masked."""
    require('rabbitmq')
    caplog.set_level(logging.WARNING)
    async_publisher._publisher.shutdown(2)
    settings.CQRS = {
        **_settings('cqrs_ut_async_nowhere'),
        'url': 'amqp://guest:secret@127.0.0.1:1/%2F',
        'master': {'CQRS_PUBLISH_RETRIES': 1, 'CQRS_PUBLISH_CONFIRMS': 'async'},
    }
    try:
        for pk in range(1, 6):
            assert RabbitMQTransport.produce(payload(pk)) is True
        assert async_publisher.flush(15)
        kept = OutboxMessage.objects.values_list('instance_pk', 'routing_key', 'body')
        assert sorted((int(pk), key, body) for pk, key, body in kept) == [
            (pk, 'golden_parent', payload(pk).encode().decode()) for pk in range(1, 6)
        ]
        assert 'async publisher cannot connect to amqp://guest:****@127.0.0.1:1' in caplog.text
        assert 'secret' not in caplog.text
    finally:
        async_publisher._publisher.shutdown(2)


@pytest.mark.django_db(transaction=True)
def test_message_that_cannot_be_framed_is_kept_and_the_rest_arrive(broker, caplog):
    """A routing key over AMQP's 255 bytes is kept in the outbox with the reason; others go."""
    caplog.set_level(logging.WARNING)
    long_id = 'golden_parent_' + '\u00e9' * 130  # 144 characters, 274 bytes in UTF-8
    RabbitMQTransport.produce(payload(1))
    RabbitMQTransport.produce(payload(2, cqrs_id=long_id))
    RabbitMQTransport.produce(payload(3))
    assert async_publisher.flush(10)
    assert [TransportPayload.decode(m[2]).pk for m in broker()] == [1, 3]
    kept = OutboxMessage.objects.get()
    assert (int(kept.instance_pk), kept.cqrs_id) == (2, long_id)
    assert 'AMQP allows at most 255' in kept.last_error


def test_inside_waiting_for_confirms_produce_returns_once_confirmed(broker):
    """Callers that delete their copy when produce() returns (the outbox relay, the
    transactional outbox) get a confirmed publish even with asynchronous confirms on."""
    assert get_settings().master.publish_confirms == 'async'
    with waiting_for_confirms():
        assert RabbitMQTransport.produce(payload(41)) is True
        assert async_publisher.pending() == 0  # nothing left to the background thread
        assert [TransportPayload.decode(m[2]).pk for m in broker()] == [41]  # already there
    RabbitMQTransport.produce(payload(42))  # outside: asynchronous again
    assert async_publisher.flush(10)
    assert [TransportPayload.decode(m[2]).pk for m in broker()] == [42]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize('mode', ['transactional', 'fallback'])
def test_outbox_rows_are_deleted_only_once_confirmed(broker, settings, mode):
    """The transactional outbox's row, and a relayed row, go only after the broker's confirm."""
    from dj_cqrs.outbox.relaying import relay_once
    from dj_cqrs.outbox.sending import keep
    from tests.dj_master.models import GoldenParent

    master = settings.CQRS.get('master', {})
    settings.CQRS = {**settings.CQRS, 'master': {**master, 'CQRS_OUTBOX_MODE': mode}}
    if mode == 'transactional':
        with transaction.atomic():  # staged in the outbox with the change, sent at commit
            GoldenParent.objects.create(id=51, name='staged')
    else:
        keep(payload(51), 'broker was down')
        assert relay_once().sent == 1
    assert async_publisher.pending() == 0
    assert not OutboxMessage.objects.exists()
    assert [TransportPayload.decode(m[2]).pk for m in broker()] == [51]


@pytest.mark.django_db(transaction=True)
def test_message_that_cannot_be_encoded_does_not_stop_the_others(broker, caplog):
    """A value no JSON encoder takes (a hook returned a set): logged, the others are sent."""
    caplog.set_level(logging.WARNING)
    bad = payload(2)
    bad.instance_data['tags'] = {'a', 'b'}
    for item in (payload(1), bad, payload(3)):
        assert RabbitMQTransport.produce(item) is True
    assert async_publisher.flush(10)
    assert [TransportPayload.decode(m[2]).pk for m in broker()] == [1, 3]
    assert any(
        'pk = 2 (golden_parent)' in r.getMessage() and r.levelno >= logging.ERROR
        for r in caplog.records
    )
    assert async_publisher.pending() == 0


def test_idle_publisher_keeps_its_connection_alive_with_heartbeats(broker, settings, caplog):
    """With a 1 s heartbeat the broker drops a silent connection after ~2 s; the publishing
    thread sends heartbeats while idle, so a message after 3.5 s goes out on the same one."""
    async_publisher._publisher.shutdown(2)
    settings.CQRS = {**settings.CQRS, 'url': URL + '?heartbeat=1'}
    caplog.set_level(logging.WARNING)
    try:
        RabbitMQTransport.produce(payload(1))
        assert async_publisher.flush(10)
        connection = async_publisher._publisher._loop.connection
        assert connection is not None and connection.params.heartbeat == 1
        time.sleep(3.5)
        RabbitMQTransport.produce(payload(2))
        assert async_publisher.flush(10)
        assert async_publisher._publisher._loop.connection is connection  # never reconnected
    finally:
        async_publisher._publisher.shutdown(2)
    assert [TransportPayload.decode(m[2]).pk for m in broker()] == [1, 2]
    assert 'connection closed' not in caplog.text


def test_unpublishable_messages_leave_the_transport_through_the_injected_sink(broker):
    """The publishing thread decides nothing about the outbox: what it cannot publish goes to
    the failure sink the outbox wired in (`background.set_failure_sink`), with the reason and
    the attempts; an application could wire its own."""
    from dj_cqrs.transport import background

    kept: list[tuple] = []
    holds: list[str] = []

    class Recording:
        def keep(self, payload, error, sender, attempts):
            kept.append((payload.pk, str(error), attempts))

        def hold(self):
            holds.append('hold')

        def release(self):
            holds.append('release')

    wired = background._sink
    assert type(wired).__module__ == 'dj_cqrs.outbox.sending'  # the outbox wired itself in
    long_id = 'golden_parent_' + '\u00e9' * 130  # a routing key over AMQP's 255 bytes
    background.set_failure_sink(Recording())
    try:
        RabbitMQTransport.produce(payload(1))
        RabbitMQTransport.produce(payload(2, cqrs_id=long_id))
        assert async_publisher.flush(10)
    finally:
        background.set_failure_sink(wired)
    assert [TransportPayload.decode(m[2]).pk for m in broker()] == [1]
    assert [(pk, attempts) for pk, _, attempts in kept] == [(2, 0)]
    assert 'cannot be sent over AMQP' in kept[0][1]
    assert 'hold' not in holds  # the broker never failed
