"""KombuTransport's dead-letter queue: count, dump, retry and purge (``cqrs_dead_letters``)."""

from __future__ import annotations

import datetime
import json

import pytest
from django.utils import timezone

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport.kombu import KombuTransport
from tests import kombu_fixtures
from tests.kombu_fixtures import body_of

broker = kombu_fixtures.broker

pytestmark = pytest.mark.django_db(transaction=True)


def dead_letter(pk, expires=True, retries=3):
    data = {'id': pk, 'name': f'dead {pk}', 'cqrs_revision': 0}
    data['cqrs_updated'] = '2024-02-29 13:45:30+00:00'
    when = timezone.now() - datetime.timedelta(hours=1) if expires else None
    payload = TransportPayload(
        'SAVE', 'golden_parent', data, pk, expires=when, retries=retries, meta={'k': pk}
    )
    payload.is_dead_letter = True
    return payload


def test_dump_lists_dead_letters_and_leaves_them(broker):
    """dump returns every dead letter's body in order and the queue still holds them."""
    broker.declare()
    payloads = [dead_letter(1), dead_letter(2)]
    for payload in payloads:
        KombuTransport.produce(payload)

    assert KombuTransport.dead_letters_count() == 2
    assert KombuTransport.dead_letters_dump() == [p.encode() for p in payloads]
    assert KombuTransport.dead_letters_dump() == [p.encode() for p in payloads]
    assert KombuTransport.dead_letters_count() == 2


def test_retry_republishes_with_retries_reset_and_fresh_expiry(broker):
    """retry sends each dead letter to ``cqrs.<queue>.<id>`` with retries 0, then removes it."""
    broker.declare()
    KombuTransport.produce(dead_letter(1))
    KombuTransport.produce(dead_letter(2, expires=False))
    reports = []

    retried = KombuTransport.dead_letters_retry(lambda i, n, body: reports.append((i, n, body)))

    assert retried == 2
    assert KombuTransport.dead_letters_count() == 0
    assert [(i, n) for i, n, _ in reports] == [(1, 2), (2, 2)]
    messages = broker.get_all(broker.queue)
    assert [m.delivery_info['routing_key'] for m in messages] == [
        f'cqrs.{broker.queue}.golden_parent'
    ] * 2
    first, second = (json.loads(body_of(m)) for m in messages)
    assert [body for _, _, body in reports] == [body_of(m) for m in messages]
    assert (first['retries'], first['meta'], first['instance_pk']) == (0, {'k': 1}, 1)
    expires = datetime.datetime.fromisoformat(first['expires'])
    assert abs((expires - timezone.now()).total_seconds() - 86400) < 60
    assert (second['retries'], second['expires']) == (0, None)


def test_retried_dead_letter_is_applied_by_the_worker(broker):
    """A retried dead letter goes back through the worker and reaches the replica."""
    from tests.dj_replica.models import GoldenParentReplica

    broker.declare()
    KombuTransport.produce(dead_letter(9))
    KombuTransport.dead_letters_retry()

    broker.run_worker(until=lambda: GoldenParentReplica.objects.filter(pk=9).exists())

    assert GoldenParentReplica.objects.get(pk=9).name == 'dead 9'


def test_unusable_dead_letter_stays_in_the_queue(broker):
    """A body that is not a message is not retried and stays in the dead-letter queue."""
    broker.declare()
    broker.publish_raw(b'garbage', f'cqrs.{broker.dead_letter_queue}.golden_parent', 'text/plain')
    KombuTransport.produce(dead_letter(1))

    assert KombuTransport.dead_letters_retry() == 1
    assert KombuTransport.dead_letters_dump() == [b'garbage']


def test_purge_drops_every_dead_letter(broker):
    """purge reports how many dead letters there were and empties the queue."""
    broker.declare()
    for pk in (1, 2, 3):
        KombuTransport.produce(dead_letter(pk))

    assert KombuTransport.dead_letters_purge() == 3
    assert KombuTransport.dead_letters_count() == 0
    assert KombuTransport.dead_letters_purge() == 0
