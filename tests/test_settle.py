"""Every settle case, and ``cqrs_dead_letters retry``, through RabbitMQTransport and
KombuTransport over AMQP and over Redis.

One consumer loop and one settle step serve every transport (``dj_cqrs.consumer.loop`` and
``dj_cqrs.consumer.settle``); these tests run each outcome against the real brokers and
assert what is left: rows in the replica, messages on the queue and on the dead-letter queue,
their bodies and headers. They are the tests that would have caught the two consumers
drifting apart (a retry copy that came back unroutable was lost by the Kombu worker).
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import kombu
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.consumer import loop as consumer_loop
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport import get_transport, rabbit_consumer
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.kombu_consumer import KombuWorker
from tests import hostile, kombu_fixtures
from tests.dj_replica.models import GoldenParentReplica

pytestmark = pytest.mark.django_db(transaction=True)

RIGS = {
    'rabbitmq': ('amqp', {'transport': 'dj_cqrs.transport.RabbitMQTransport'}),
    'kombu-amqp': ('amqp', {}),
    'kombu-redis': ('redis', {}),
}


class RabbitWorker:
    """``RabbitConsumer`` with the interface of :class:`KombuWorker` the broker helper drives."""

    IDLE_TICK = 0.2

    def stop(self) -> None:
        rabbit_consumer.request_stop()

    def run(self) -> None:
        class Consumer(rabbit_consumer.RabbitConsumer):
            handler_thread = False  # apply in this thread, on the test's database connection
            idle_tick = self.IDLE_TICK

        Consumer(get_transport()).run()


class Rig:
    """One transport on one broker, with its queues to look into."""

    def __init__(self, name: str, broker: kombu_fixtures.Broker) -> None:
        self.name = name
        self.broker = broker
        self.reasons: list[str] = []

    @property
    def amqp(self) -> bool:
        return self.broker.name == 'amqp'

    def worker(self) -> Any:
        return RabbitWorker() if self.name == 'rabbitmq' else KombuWorker()

    def run(self, until: Callable[[], bool], **replica: Any) -> float:
        def on_dead_letter(sender: Any, reason: str = '', **kwargs: Any) -> None:
            self.reasons.append(reason)

        settings = self.broker.settings
        settings = {**settings, 'replica': {**settings['replica'], **replica}}
        signals.message_dead_lettered.connect(on_dead_letter, dispatch_uid='settle-test')
        try:
            with override_settings(CQRS=settings):
                return self.broker.run_worker(until, timeout=20, worker=self.worker())
        finally:
            signals.message_dead_lettered.disconnect(dispatch_uid='settle-test')

    def events(self) -> list[str]:
        return self.broker.event_names()

    def queue(self) -> list[Any]:
        return self.broker.get_all(self.broker.queue)

    def dead_letters(self) -> list[Any]:
        return self.broker.get_all(self.broker.dead_letter_queue)

    def unbind(self, routing_key: str) -> None:
        """Remove one binding of the service queue, as an operator (or a redeploy) might."""
        queue, exchange = self.broker.queue, self.broker.settings['exchange']
        with kombu_transport.connect() as connection:
            channel: Any = connection.default_channel
            if self.amqp:
                channel.queue_unbind(queue, exchange, routing_key=routing_key)
                return
            table = channel.keyprefix_queue % exchange
            for member in channel.client.smembers(table):
                key, _, bound = member.decode().split(channel.sep)
                if (key, bound) == (routing_key, queue):
                    channel.client.srem(table, member)


@pytest.fixture(params=list(RIGS))
def rig(request: Any) -> Iterator[Rig]:
    broker_name, overrides = RIGS[request.param]
    for broker in kombu_fixtures.make_broker(broker_name, **overrides):
        broker.declare()
        yield Rig(request.param, broker)


def parent(pk: int, name: str | None = 'n') -> TransportPayload:
    data = {'id': pk, 'name': name, 'cqrs_revision': 0, 'cqrs_updated': hostile.UPDATED}
    expires = timezone.now() + datetime.timedelta(days=1)
    return TransportPayload('SAVE', 'golden_parent', data, pk, expires=expires)


def failing(pk: int, retries: int = 0) -> TransportPayload:
    """A message the replica always fails to apply (GoldenFailReplica raises)."""
    data = {'id': pk, 'name': 'f', 'cqrs_revision': 0, 'cqrs_updated': hostile.UPDATED}
    expires = timezone.now() + datetime.timedelta(days=1)
    return TransportPayload('SAVE', 'golden_fail', data, pk, expires=expires, retries=retries)


def body(message: Any) -> dict[str, Any]:
    return json.loads(kombu_fixtures.body_of(message))


def rows() -> dict[int, str | None]:
    return dict(GoldenParentReplica.objects.order_by('id').values_list('id', 'name'))


def test_applied_message_is_acked(rig: Rig) -> None:
    """A good message is applied and acknowledged: nothing is left on either queue."""
    get_transport().produce(parent(1))

    rig.run(until=lambda: GoldenParentReplica.objects.exists())

    assert rows() == {1: 'n'}
    assert rig.events() == ['applied']
    assert rig.queue() == []
    assert rig.dead_letters() == []


def test_failure_with_retries_left_is_requeued_with_retries_plus_one(rig: Rig) -> None:
    """A failed message waits CQRS_RETRY_DELAY, then its copy (retries + 1) is on the service
    queue under the requeue key, and the original is gone."""
    get_transport().produce(failing(1))

    took = rig.run(until=lambda: 'requeued' in rig.events(), CQRS_RETRY_DELAY=1)

    assert took >= 1.0
    assert rig.events() == ['failed', 'delayed', 'requeued']
    (copy,) = rig.queue()
    assert copy.delivery_info['routing_key'] == f'cqrs.{rig.broker.queue}.golden_fail'
    assert (body(copy)['instance_pk'], body(copy)['retries']) == (1, 1)
    assert rig.dead_letters() == []


def test_exhausted_retries_go_to_the_dead_letters_with_their_ttl(rig: Rig) -> None:
    """At CQRS_MAX_RETRIES the message is dead-lettered as it came (same retries), with the
    dead_message_ttl expiration on AMQP, and is no longer on the service queue."""
    get_transport().produce(failing(1, retries=1))

    rig.run(until=lambda: 'dead_lettered' in rig.events(), CQRS_MAX_RETRIES=1)

    assert rig.events() == ['failed', 'dead_lettered']
    assert rig.reasons == ['retries exhausted']
    (dead,) = rig.dead_letters()
    assert dead.delivery_info['routing_key'] == f'cqrs.{rig.broker.dead_letter_queue}.golden_fail'
    assert (body(dead)['instance_pk'], body(dead)['retries']) == (1, 1)
    if rig.amqp:
        assert dead.properties['expiration'] == '864000000'
    assert rig.queue() == []


def test_retry_copy_that_comes_back_unroutable_is_dead_lettered(rig: Rig) -> None:
    """The requeue key is unbound while the message waits: its retry cannot be routed, so the
    message is dead-lettered (retries unchanged), never lost."""
    key = f'cqrs.{rig.broker.queue}.golden_fail'

    def unbind(sender: Any, **kwargs: Any) -> None:
        rig.unbind(key)

    signals.message_delayed.connect(unbind, dispatch_uid='settle-unbind')
    try:
        get_transport().produce(failing(1))
        rig.run(until=lambda: 'dead_lettered' in rig.events(), CQRS_RETRY_DELAY=0)
    finally:
        signals.message_delayed.disconnect(dispatch_uid='settle-unbind')

    assert rig.events() == ['failed', 'delayed', 'dead_lettered']
    assert rig.reasons == ['requeue unroutable']
    (dead,) = rig.dead_letters()
    assert (body(dead)['instance_pk'], body(dead)['retries']) == (1, 0)
    assert rig.queue() == []


def test_hostile_bodies_are_settled_and_the_next_good_message_applies(rig: Rig) -> None:
    """An undecodable body is rejected, a message that can never apply is dead-lettered at
    once, and the good message published after them is applied."""
    reject = next(b for _, b, expected in hostile.BODIES if expected == hostile.REJECT)
    dead = next(b for _, b, expected in hostile.BODIES if expected == hostile.DEAD_LETTER)
    for raw in (b'{not json', reject, dead, hostile.good(1)):
        rig.broker.publish_raw(raw, 'golden_parent', 'text/plain')

    rig.run(until=lambda: 'applied' in rig.events())

    assert sorted(rig.events()) == ['applied', 'dead_lettered', 'rejected', 'rejected']
    assert rows() == {1: 'good1'}
    assert [body(m) for m in rig.dead_letters()] == [json.loads(dead)]
    assert rig.queue() == []


def test_one_bad_message_of_a_batch_fails_alone(rig: Rig, monkeypatch: Any) -> None:
    """Five waiting messages go as one batch; the one the database refuses is dead-lettered,
    the four others are applied."""
    sizes: list[int] = []
    real = consumer_loop.apply_batch

    def counting(deliveries: Any, sender: Any = None) -> Any:
        sizes.append(len(deliveries))
        return real(deliveries, sender=sender)

    monkeypatch.setattr(consumer_loop, 'apply_batch', counting)
    for pk in range(1, 6):
        get_transport().produce(parent(pk, None if pk == 3 else f'p{pk}'))

    rig.run(
        until=lambda: rig.events().count('applied') == 4 and 'dead_lettered' in rig.events(),
        CQRS_BATCH_SIZE=10,
        CQRS_MAX_RETRIES=0,
    )

    assert max(sizes) > 1
    assert rows() == {1: 'p1', 2: 'p2', 4: 'p4', 5: 'p5'}
    assert sorted(rig.events()) == ['applied'] * 4 + ['dead_lettered', 'failed']
    (dead,) = rig.dead_letters()
    assert body(dead)['instance_pk'] == 3
    assert rig.queue() == []


# ------------------------------------------------------------------ cqrs_dead_letters retry


def retry_command() -> list[str]:
    out = io.StringIO()
    call_command('cqrs_dead_letters', 'retry', stdout=out)
    return out.getvalue().splitlines()


def test_dead_letters_retry_republishes_with_retries_reset_and_keeps_a_bad_body(rig: Rig) -> None:
    """``cqrs_dead_letters retry``: each dead letter goes back to the service queue under the
    requeue key with retries 0 and an ``expires`` a day from now; a body that is not a message
    stays in the dead letters."""
    dead_key = f'cqrs.{rig.broker.dead_letter_queue}.golden_fail'
    rig.broker.publish_raw(b'garbage', dead_key, 'text/plain')
    rig.broker.publish_raw(failing(1, retries=3).encode(), dead_key, 'text/plain')

    out = retry_command()

    assert out[:2] == ['Total dead letters: 2', 'Retrying: 2/2']
    (copy,) = rig.queue()
    assert copy.delivery_info['routing_key'] == f'cqrs.{rig.broker.queue}.golden_fail'
    assert body(copy) == json.loads(out[2])
    assert (body(copy)['instance_pk'], body(copy)['retries']) == (1, 0)
    expires = datetime.datetime.fromisoformat(body(copy)['expires'])
    assert abs((expires - timezone.now()).total_seconds() - 86400) < 60
    assert [kombu_fixtures.body_of(m) for m in rig.dead_letters()] == [b'garbage']


def test_dead_letter_retry_that_cannot_be_routed_stays(rig: Rig) -> None:
    """A dead letter of a model this service no longer has (no binding for its requeue key) is
    not lost by retry: the command fails saying so and the dead letter stays."""
    gone = TransportPayload('SAVE', 'gone_model', {'id': 1}, 1).encode()
    with kombu_transport.connect() as connection:
        producer = kombu.Producer(connection.default_channel)
        # The default exchange delivers by queue name: no binding is needed to put it there.
        producer.publish(gone, exchange='', routing_key=rig.broker.dead_letter_queue)

    with pytest.raises(CommandError, match='no queue is bound'):
        retry_command()

    assert [kombu_fixtures.body_of(m) for m in rig.dead_letters()] == [gone]
    assert rig.queue() == []
