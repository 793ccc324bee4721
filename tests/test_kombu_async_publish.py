"""KombuTransport with CQRS_PUBLISH_CONFIRMS='async': saves do not wait for the broker.

Runs over RabbitMQ (``amqp://``, publisher confirms) and Redis (the ``LPUSH`` reply), through
the same background publishing thread as RabbitMQTransport (dj_cqrs.transport.background).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from dj_cqrs import signals
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.models import OutboxMessage
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport import kombu_publisher
from dj_cqrs.transport.base import waiting_for_confirms
from dj_cqrs.transport.kombu import KombuTransport
from tests import kombu_fixtures
from tests.kombu_fixtures import Broker, body_of
from tests.test_kombu_batch import parent


@pytest.fixture(params=['amqp', 'redis'])
def broker(request: Any) -> Iterator[Broker]:
    """KombuTransport over a real broker with the background publisher on (the default)."""
    for broker in kombu_fixtures.make_broker(
        request.param, master={'CQRS_PUBLISH_CONFIRMS': 'async', 'CQRS_PUBLISH_RETRIES': 2}
    ):
        broker.declare()
        try:
            yield broker
        finally:
            kombu_publisher._publisher.shutdown(5)


def pks(messages: list[Any]) -> list[int]:
    return [json.loads(body_of(m))['instance_pk'] for m in messages]


def test_produce_returns_before_the_broker_is_reached(broker):
    """The calling thread never talks to the broker: the thread publishes, then signals."""
    threads: list[str] = []
    published: list[tuple[int, str]] = []
    real = kombu_transport.publish

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    def on_published(sender: Any, payload: Any, **kwargs: Any) -> None:
        published.append((payload.pk, threading.current_thread().name))

    signals.message_published.connect(on_published, weak=False, dispatch_uid='kombu-async')
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(kombu_transport, 'publish', recording)
            began = time.monotonic()
            for pk in range(1, 201):
                assert KombuTransport.produce(parent(pk)) is True
            submitted = time.monotonic() - began
            assert kombu_publisher.flush(15)
    finally:
        signals.message_published.disconnect(dispatch_uid='kombu-async')
    main = threading.current_thread().name
    assert threads and main not in threads
    assert [pk for pk, _ in published] == list(range(1, 201))
    assert {name for _, name in published} == {'cqrs-kombu-async-publisher'}
    assert pks(broker.get_all(broker.queue)) == list(range(1, 201))  # all there, in order
    assert submitted < 2.0


def test_unroutable_is_logged_not_signalled(broker, caplog):
    """On AMQP a message no queue is bound to is logged as unroutable, not as published."""
    if broker.name != 'amqp':
        pytest.skip('only AMQP brokers return unroutable messages')
    published: list[int] = []
    signals.message_published.connect(
        lambda sender, payload, **kw: published.append(payload.pk),
        weak=False,
        dispatch_uid='kombu-async-unroutable',
    )
    caplog.set_level(logging.WARNING)
    try:
        KombuTransport.produce(TransportPayload('SAVE', 'nobody_listens', {'id': 7}, 7))
        KombuTransport.produce(parent(8))
        assert kombu_publisher.flush(10)
    finally:
        signals.message_published.disconnect(dispatch_uid='kombu-async-unroutable')
    assert 'CQRS is unroutable: pk = 7 (nobody_listens)' in caplog.text
    assert published == [8]
    assert pks(broker.get_all(broker.queue)) == [8]


@pytest.mark.django_db(transaction=True)
def test_unreachable_broker_keeps_messages_in_the_outbox_without_blocking(broker, caplog):
    """No broker at the URL: produce() still returns at once and every message is kept in
    the outbox (by the thread after its retries, or by the save's hold); none is lost."""
    kombu_publisher._publisher.shutdown(2)
    url = {'amqp': 'amqp://guest:secret@127.0.0.1:1//', 'redis': 'redis://:secret@127.0.0.1:1/0'}
    settings = {**broker.settings, 'url': url[broker.name]}
    caplog.set_level(logging.WARNING)
    with override_settings(CQRS=settings):
        from dj_cqrs.outbox import sending

        slowest = 0.0
        for pk in range(1, 6):
            began = time.monotonic()
            sending.send(parent(pk))  # what a save's on_commit calls
            slowest = max(slowest, time.monotonic() - began)
        assert kombu_publisher.flush(30)
        kept = sorted(int(pk) for pk in OutboxMessage.objects.values_list('instance_pk', flat=True))
    assert kept == [1, 2, 3, 4, 5]
    assert slowest < 0.05
    assert 'secret' not in caplog.text


def test_inside_waiting_for_confirms_produce_returns_once_published(broker):
    """The outbox relay deletes its row when produce() returns: there it publishes itself."""
    with waiting_for_confirms():
        assert KombuTransport.produce(parent(41)) is True
        assert kombu_publisher.pending() == 0
        assert pks(broker.get_all(broker.queue)) == [41]


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_forked_child_publishes_through_its_own_thread(broker):
    """A child created by fork starts its own publisher; the parent's keeps working."""
    KombuTransport.produce(parent(1))
    assert kombu_publisher.flush(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            KombuTransport.produce(parent(2))
            code = 0 if kombu_publisher.flush(10) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    KombuTransport.produce(parent(3))
    assert kombu_publisher.flush(10)
    assert sorted(pks(broker.get_all(broker.queue))) == [1, 2, 3]


def test_the_documented_flush_waits_for_kombu_messages_too(broker):
    """``async_publisher.flush()`` (docs/transports.md) is the process's flush, whichever
    transport queued the messages: a master on Kombu that calls it before exiting (as the
    RabbitMQ docs say) finds every message published, and ``pending()`` counts them."""
    from dj_cqrs.transport import async_publisher

    gate = threading.Event()
    real = kombu_transport.publish

    def held(*args: Any, **kwargs: Any) -> Any:
        gate.wait(10)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kombu_transport, 'publish', held)
        for pk in range(1, 21):
            assert KombuTransport.produce(parent(pk)) is True
        assert async_publisher.pending() == 20
        assert async_publisher.flush(0.3) is False  # still held: not flushed
        gate.set()
        assert async_publisher.flush(15) is True
    assert async_publisher.pending() == 0
    assert pks(broker.get_all(broker.queue)) == list(range(1, 21))
