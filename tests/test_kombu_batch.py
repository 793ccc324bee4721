"""The Kombu worker applies what is waiting in batches, with the outcome of each message kept.

Each test runs a real :class:`KombuWorker` over Kombu's ``memory://`` transport, RabbitMQ and
Redis, against a queue filled before the worker starts (so that messages are waiting).
"""

from __future__ import annotations

import datetime
import json
import threading
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dj_cqrs.consumer import handler
from dj_cqrs.consumer import loop as consumer_loop
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport import async_publisher
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.kombu_consumer import KombuWorker
from tests import kombu_fixtures
from tests.dj_replica.models import GoldenParentReplica

broker = kombu_fixtures.broker

pytestmark = pytest.mark.django_db(transaction=True)


def parent(pk: int, name: str | None = 'n', revision: int = 0) -> TransportPayload:
    data = {'id': pk, 'name': name, 'cqrs_revision': revision}
    data['cqrs_updated'] = '2024-02-29 13:45:30.123456+00:00'
    expires = timezone.now() + datetime.timedelta(days=1)
    return TransportPayload('SAVE', 'golden_parent', data, pk, expires=expires)


def rows() -> dict[int, tuple[str, int]]:
    return {r.id: (r.name, r.cqrs_revision) for r in GoldenParentReplica.objects.order_by('id')}


def inserts(queries: CaptureQueriesContext) -> int:
    """INSERT statements into the replica table (an executemany counts once)."""
    return sum(
        1
        for q in queries.captured_queries
        if 'INSERT' in q['sql'] and 'goldenparentreplica' in q['sql']
    )


@pytest.fixture
def batches(monkeypatch: Any) -> list[int]:
    """The size of each group of two or more the worker hands to ``apply_batch``."""
    sizes: list[int] = []
    real = consumer_loop.apply_batch

    def counting(deliveries: Any, sender: Any = None) -> Any:
        if len(deliveries) > 1:  # one delivery is handled alone (``singles``)
            sizes.append(len(deliveries))
        return real(deliveries, sender=sender)

    monkeypatch.setattr(consumer_loop, 'apply_batch', counting)
    return sizes


@pytest.fixture
def singles(monkeypatch: Any) -> list[bytes]:
    """The bodies handled alone (one delivery handed to ``apply_batch``, or to the one-by-one
    handler when batching is off)."""
    bodies: list[bytes] = []
    real_batch, real_handle = consumer_loop.apply_batch, handler.handle
    alone = threading.local()

    def batch(deliveries: Any, sender: Any = None) -> Any:
        if len(deliveries) == 1:
            bodies.append(deliveries[0].body)
        alone.inside = len(deliveries) == 1
        try:
            return real_batch(deliveries, sender=sender)
        finally:
            alone.inside = False

    def handle(body: bytes, routing_key: Any = None, sender: Any = None) -> Any:
        if not getattr(alone, 'inside', False):
            bodies.append(body)  # not counted twice when a lone delivery goes one by one
        return real_handle(body, routing_key, sender=sender)

    monkeypatch.setattr(consumer_loop, 'apply_batch', batch)
    monkeypatch.setattr(handler, 'handle', handle)
    return bodies


def with_replica(broker: kombu_fixtures.Broker, **replica: Any) -> Any:
    settings = {**broker.settings, 'replica': {**broker.settings['replica'], **replica}}
    return override_settings(CQRS=settings)


def test_full_queue_is_applied_in_far_fewer_transactions_than_messages(broker, batches, singles):
    """250 waiting messages (creates, then updates) take a few dozen transactions, not 250."""
    broker.declare()
    for pk in range(1, 201):
        KombuTransport.produce(parent(pk, f'p{pk}'))
    for pk in range(1, 51):
        KombuTransport.produce(parent(pk, f'u{pk}', revision=1))

    # Every message the background publisher may still send (a late copy too) is queued
    # before the worker starts, so the worker drains the queue it finds, copies included.
    async_publisher.flush(10)
    waiting = broker.depth(broker.queue)
    assert 250 <= waiting <= 260

    with CaptureQueriesContext(connection) as queries:
        broker.run_worker(
            until=lambda: (
                GoldenParentReplica.objects.filter(cqrs_revision=1).count() == 50
                and sum(batches) + len(singles) >= waiting
            ),
            timeout=60,
        )

    expected = {pk: (f'p{pk}', 0) for pk in range(51, 201)}
    expected.update({pk: (f'u{pk}', 1) for pk in range(1, 51)})
    assert rows() == expected
    transactions = len(batches) + len(singles)
    # Delivery is at least once: under load a publish whose confirm comes late is kept and sent
    # again (seen once on MariaDB in CI: pk 1 and 2 twice), and the revision check skips the copy.
    assert 250 <= sum(batches) + len(singles) <= 260
    assert transactions <= 60
    assert inserts(queries) <= 40
    assert broker.get_all(broker.queue) == []


def test_batch_size_setting_decides_the_batch_not_a_prefetch_default(broker, batches, singles):
    """With CQRS_BATCH_SIZE 50 and no prefetch setting, 200 waiting messages go in a handful of
    full batches (the prefetch follows the batch size; Redis takes what waits without waiting).
    """
    with with_replica(broker, CQRS_BATCH_SIZE=50):
        broker.declare()
        for pk in range(1, 201):
            KombuTransport.produce(parent(pk, f'p{pk}'))
        broker.run_worker(until=lambda: GoldenParentReplica.objects.count() == 200, timeout=60)

    assert rows() == {pk: (f'p{pk}', 0) for pk in range(1, 201)}
    assert sum(batches) + len(singles) == 200
    assert max(batches) == 50, batches
    assert len(batches) + len(singles) <= 10, (batches, len(singles))


def test_prefetch_setting_when_given_still_bounds_the_batch(broker, batches, singles):
    """An explicit consumer_prefetch_count is kept: the broker hands out no more, so no batch
    is larger, whatever CQRS_BATCH_SIZE says."""
    settings = {**broker.settings, 'consumer_prefetch_count': 5}
    with override_settings(CQRS=settings):
        broker.declare()
        for pk in range(1, 41):
            KombuTransport.produce(parent(pk, f'p{pk}'))
        broker.run_worker(until=lambda: GoldenParentReplica.objects.count() == 40, timeout=60)

    assert rows() == {pk: (f'p{pk}', 0) for pk in range(1, 41)}
    assert sum(batches) + len(singles) == 40
    assert max(batches) <= 5, batches


def test_bad_message_in_a_batch_is_retried_and_dead_lettered_alone(broker, batches, cqrs_log):
    """A row the database refuses fails alone: retried, then dead-lettered; the rest apply."""
    broker.declare()
    for pk in range(1, 31):
        KombuTransport.produce(parent(pk, None if pk == 15 else f'p{pk}'))

    broker.run_worker(until=lambda: 'dead_lettered' in broker.event_names(), timeout=30)

    assert max(batches) > 1
    assert rows() == {pk: (f'p{pk}', 0) for pk in range(1, 31) if pk != 15}
    failed = [p.pk for name, p in broker.events if name in ('failed', 'delayed', 'requeued')]
    assert set(failed) == {15}
    assert broker.event_names().count('applied') == 29
    assert any(line.endswith('CQRS create error: pk = 15 (golden_parent).') for line in cqrs_log())
    assert broker.get_all(broker.queue) == []
    (dead,) = broker.get_all(broker.dead_letter_queue)
    body = json.loads(dead.body)
    assert (body['instance_pk'], body['retries']) == (15, 1)


def test_single_message_on_an_idle_queue_is_applied_without_waiting_for_a_batch(broker):
    """A lone message is applied although the batch (100) is far from full."""
    worker = KombuWorker()

    def publish_when_consuming() -> None:
        if worker.consuming.wait(10):
            KombuTransport.produce(parent(7, 'alone'))

    thread = threading.Thread(target=publish_when_consuming)
    thread.start()
    broker.run_worker(until=lambda: GoldenParentReplica.objects.exists(), worker=worker)
    thread.join(10)

    assert rows() == {7: ('alone', 0)}
    assert broker.event_names() == ['applied']


def test_batching_off_applies_one_message_per_transaction(broker, batches, singles):
    """CQRS_BATCH_SIZE 1: each message is written on its own."""
    with with_replica(broker, CQRS_BATCH_SIZE=1):
        broker.declare()
        for pk in range(1, 31):
            KombuTransport.produce(parent(pk, f'p{pk}'))

        with CaptureQueriesContext(connection) as queries:
            broker.run_worker(until=lambda: GoldenParentReplica.objects.count() == 30)

    assert rows() == {pk: (f'p{pk}', 0) for pk in range(1, 31)}
    assert batches == []
    assert len(singles) == 30
    assert inserts(queries) == 30


def test_crash_of_the_batch_applies_its_messages_one_by_one(broker, monkeypatch, cqrs_log):
    """A bug in the batch code loses nothing: the messages are handled alone and applied."""
    calls = []
    real = consumer_loop.apply_batch

    def broken(deliveries: Any, sender: Any = None) -> Any:
        calls.append(len(deliveries))
        if len(deliveries) > 1:
            raise RuntimeError('batch bug')
        return real(deliveries, sender=sender)

    monkeypatch.setattr(consumer_loop, 'apply_batch', broken)
    broker.declare()
    for pk in range(1, 21):
        KombuTransport.produce(parent(pk, f'p{pk}'))

    broker.run_worker(until=lambda: GoldenParentReplica.objects.count() == 20)

    assert calls and max(calls) > 1
    assert rows() == {pk: (f'p{pk}', 0) for pk in range(1, 21)}
    assert 'ERROR CQRS service exception' in cqrs_log()
    assert broker.get_all(broker.dead_letter_queue) == []


def test_rejected_content_type_in_a_batch_leaves_the_others(broker, batches):
    """A non-JSON message among waiting ones is rejected before the batch; the others apply."""
    broker.declare()
    KombuTransport.produce(parent(1, 'a'))
    broker.publish_raw(b'\x80\x04N.', 'golden_parent', 'application/x-python-serialize')
    KombuTransport.produce(parent(2, 'b'))

    broker.run_worker(until=lambda: GoldenParentReplica.objects.count() == 2)

    assert rows() == {1: ('a', 0), 2: ('b', 0)}
    assert sorted(broker.event_names()) == ['applied', 'applied', 'rejected']
    assert broker.get_all(broker.queue) == []
    assert broker.get_all(broker.dead_letter_queue) == []


def test_a_batch_holds_no_more_body_bytes_than_the_message_size_limit(broker, batches, singles):
    """Batches are bounded by bytes too: with CQRS_MAX_MESSAGE_SIZE at 5,000 bytes, messages of
    about 2,000 bytes go at most two at a time (a batch is decoded whole before it applies)."""
    broker.declare()
    for pk in range(1, 9):
        padded = parent(pk)
        padded._meta = {'pad': 'x' * 1800}  # a body of about 2,000 bytes
        KombuTransport.produce(padded)
    with with_replica(broker, CQRS_MAX_MESSAGE_SIZE=5000):
        broker.run_worker(until=lambda: GoldenParentReplica.objects.count() == 8, timeout=30)
    assert GoldenParentReplica.objects.count() == 8
    assert batches and max(batches) == 2, batches
    assert sum(batches) + len(singles) == 8
