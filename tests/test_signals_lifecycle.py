"""The message lifecycle signals and their default log receivers (in process and over RabbitMQ)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

import pytest
from django.test import override_settings

from dj_cqrs import signals
from dj_cqrs.transport import InProcessTransport
from tests.dj_master.models import GoldenFail, GoldenParent
from tests.dj_replica.models import GoldenParentReplica
from tests.services import require

LIFECYCLE = {
    'published': signals.message_published,
    'publish_failed': signals.message_publish_failed,
    'received': signals.message_received,
    'applied': signals.message_applied,
    'failed': signals.message_failed,
    'delayed': signals.message_delayed,
    'requeued': signals.message_requeued,
    'dead_lettered': signals.message_dead_lettered,
    'rejected': signals.message_rejected,
}


def correlation(signal_type, cqrs_id, instance_pk, queue):
    return f'corr:{signal_type}:{cqrs_id}:{instance_pk}'


def cqrs_settings(transport='dj_cqrs.transport.InProcessTransport', queue='replica', **replica):
    return {
        'transport': transport,
        'queue': queue,
        'master': {
            'CQRS_AUTO_UPDATE_FIELDS': False,
            'CQRS_MESSAGE_TTL': 86400,
            'correlation_function': correlation,
        },
        'replica': {'CQRS_MAX_RETRIES': 2, 'CQRS_RETRY_DELAY': 0, **replica},
    }


@pytest.fixture
def events() -> Iterator[list[tuple[str, object, dict]]]:
    """Every lifecycle signal sent during the test, as (name, sender, kwargs)."""
    got: list[tuple[str, object, dict]] = []
    receivers = []
    for name, signal in LIFECYCLE.items():

        def receiver(sender, _name=name, **kwargs):
            kwargs.pop('signal')
            got.append((_name, sender, kwargs))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield got
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def named(events, name):
    return [kwargs for event, _, kwargs in events if event == name]


def ids(payload):
    """What identifies a message for an operator: cqrs_id, pk, revision, correlation id."""
    return (
        payload.cqrs_id,
        payload.pk,
        payload.instance_data.get('cqrs_revision'),
        payload.correlation_id,
    )


RABBIT_URL = 'amqp://guest:guest@127.0.0.1:5672/%2F'


class Over:
    """Runs a master action through one transport until the replica side is done with it."""

    def __init__(self, name: str) -> None:
        self.name = name
        token = uuid.uuid4().hex[:8]
        self.queue = 'replica' if name == 'inprocess' else f'lifecycle_{token}'
        self.exchange = f'lifecycle_{token}'

    @property
    def transport(self):
        if self.name == 'inprocess':
            return InProcessTransport
        from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

        return RabbitMQTransport

    def settings(self, **replica):
        if self.name == 'inprocess':
            return cqrs_settings(**replica)
        path = 'dj_cqrs.transport.RabbitMQTransport'
        return {
            **cqrs_settings(path, self.queue, **replica),
            'url': RABBIT_URL,
            'exchange': self.exchange,
        }

    def run(self, action, until, **replica):
        """``action()`` (master saves), then consume until signal ``until`` is sent."""
        with override_settings(CQRS=self.settings(**replica)):
            if self.name == 'inprocess':
                return action()
            self._declare()
            result = action()
            self._consume_until(until)
            return result

    def publish_raw(self, body: bytes, routing_key: str) -> None:
        """Bytes on the wire, as a foreign or broken master would send them."""
        if self.name == 'inprocess':
            InProcessTransport.deliver(body, routing_key)
            return
        import pika

        with self._channel() as channel:
            channel.basic_publish(self.exchange, routing_key, body, pika.BasicProperties())

    def dead_letters(self) -> int:
        if self.name == 'inprocess':
            return len(InProcessTransport.dead_letters)
        with self._channel() as channel:
            ok = channel.queue_declare(f'dead_letter_{self.queue}', passive=True)
            return ok.method.message_count

    @contextlib.contextmanager
    def _channel(self):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
        try:
            yield connection.channel()
        finally:
            connection.close()

    def _declare(self):
        from dj_cqrs.conf import get_settings
        from dj_cqrs.transport.amqp import topology_for

        with self._channel() as channel:
            topology_for(get_settings()).declare(channel)

    def _consume_until(self, until):
        from dj_cqrs.transport import rabbit_consumer

        class Consumer(rabbit_consumer.RabbitConsumer):
            handler_thread = False  # apply in this thread, on the test's database connection

        def stop(sender, **kwargs):
            rabbit_consumer.request_stop()

        until.connect(stop, weak=False)
        timer = threading.Timer(20.0, rabbit_consumer.request_stop)
        timer.start()
        try:
            Consumer(self.transport).run()
        finally:
            timer.cancel()
            until.disconnect(stop)

    def cleanup(self):
        if self.name == 'inprocess':
            return
        self.transport.clean_connection()
        with self._channel() as channel:
            channel.queue_delete(self.queue)
            channel.queue_delete(f'dead_letter_{self.queue}')
            channel.exchange_delete(self.exchange)


@pytest.fixture(params=['inprocess', 'rabbitmq'])
def over(request):
    """The transport the lifecycle runs over: in process, or a real RabbitMQ (own exchange)."""
    if request.param == 'rabbitmq':
        require('rabbitmq')
    runner = Over(request.param)
    yield runner
    runner.cleanup()


@pytest.mark.django_db(transaction=True)
def test_applied_message_sends_published_received_applied_once(events, over):
    """A save sends published, received and applied once each, in order, with the payload."""
    over.run(lambda: GoldenParent.objects.create(id=5, name='five'), signals.message_applied)

    assert [name for name, _, _ in events] == ['published', 'received', 'applied']
    assert {sender for _, sender, _ in events} == {over.transport}
    expected = ('golden_parent', 5, 0, 'corr:SAVE:golden_parent:5')
    for _, _, kwargs in events:
        assert ids(kwargs['payload']) == expected
    (published,) = named(events, 'published')
    assert published['duration'] >= 0
    (received,) = named(events, 'received')
    assert received['routing_key'] == 'golden_parent'
    (applied,) = named(events, 'applied')
    assert 0 <= applied['duration'] < 5
    assert 0 <= applied['lag'] < 5
    assert GoldenParentReplica.objects.get(id=5).name == 'five'


@pytest.mark.django_db(transaction=True)
def test_failing_message_sends_failed_delayed_requeued_then_dead_lettered(events, over):
    """A message that keeps failing: failed per attempt with its retry count, then dead-lettered."""
    over.run(
        lambda: GoldenFail.objects.create(name='doomed'),
        signals.message_dead_lettered,
        CQRS_MAX_RETRIES=1,
        CQRS_RETRY_DELAY=1,
    )

    assert [name for name, _, _ in events] == [
        'published',
        'received',
        'failed',
        'delayed',
        'published',
        'requeued',
        'received',
        'failed',
        'dead_lettered',
    ]
    assert {sender for _, sender, _ in events} == {over.transport}
    failed = named(events, 'failed')
    assert [f['retries'] for f in failed] == [0, 1]
    assert all(isinstance(f['error'], RuntimeError) for f in failed)
    assert all(f['duration'] >= 0 for f in failed)
    (delayed,) = named(events, 'delayed')
    assert (delayed['delay'], delayed['retries']) == (1, 0)
    (requeued,) = named(events, 'requeued')
    assert requeued['payload'].retries == 1
    first, again = named(events, 'published')
    assert (first['payload'].retries, again['payload'].retries) == (0, 1)
    (dead,) = named(events, 'dead_lettered')
    assert dead['reason'] == 'retries exhausted'
    assert dead['payload'].retries == 1
    pk = GoldenFail.objects.get().pk
    assert ids(dead['payload']) == ('golden_fail', pk, 0, f'corr:SAVE:golden_fail:{pk}')
    assert over.dead_letters() == 1


@pytest.mark.django_db(transaction=True)
def test_bad_body_sends_rejected_once(events, over):
    """A body that is not JSON sends only message_rejected, with the reason."""
    over.run(lambda: over.publish_raw(b'not json {', 'golden_parent'), signals.message_rejected)
    assert [name for name, _, _ in events] == ['rejected']
    assert {sender for _, sender, _ in events} == {over.transport}
    (rejected,) = named(events, 'rejected')
    assert rejected['body'] == b'not json {'
    assert rejected['reason']


@pytest.mark.django_db(transaction=True)
def test_each_lifecycle_log_line_is_written_once(cqrs_log):
    """The original's lines, as plain strings, once each: written by the default receivers."""
    with override_settings(CQRS=cqrs_settings(CQRS_MAX_RETRIES=1, CQRS_RETRY_DELAY=0)):
        GoldenParent.objects.create(id=7, name='seven')
        fail = GoldenFail.objects.create(name='doomed')

    lines = [line for line in cqrs_log() if ' CQRS is ' in line]
    parent = 'pk = 7 (golden_parent), correlation_id = corr:SAVE:golden_parent:7'
    failing = f'pk = {fail.pk} (golden_fail), correlation_id = corr:SAVE:golden_fail:{fail.pk}'
    assert lines[:3] == [
        f'INFO CQRS is published: {parent}.',
        f'INFO CQRS is received: {parent}.',
        f'INFO CQRS is applied: {parent}.',
    ]
    assert lines[3:6] == [
        f'INFO CQRS is published: {failing}.',
        f'INFO CQRS is received: {failing}.',
        f'WARNING CQRS is failed: {failing}, retries = 0.',
    ]
    assert lines[6].startswith(f'WARNING CQRS is delayed: {failing}, delay = 0 sec, eta = 20')
    assert lines[7:9] == [
        f'INFO CQRS is published: {failing}.',
        f'WARNING CQRS is requeued: {failing}.',
    ]
    assert lines[9:] == [
        f'INFO CQRS is received: {failing}.',
        f'WARNING CQRS is failed: {failing}, retries = 1.',
        f'WARNING CQRS is added to dead letter queue: {failing}.',
    ]


@pytest.mark.django_db(transaction=True)
def test_lifecycle_logging_off_keeps_signals(cqrs_log, events):
    """With CQRS['lifecycle_logging'] False no lifecycle line is written; signals still fire."""
    with override_settings(CQRS={**cqrs_settings(), 'lifecycle_logging': False}):
        GoldenParent.objects.create(id=8, name='eight')
    assert [name for name, _, _ in events] == ['published', 'received', 'applied']
    assert not [line for line in cqrs_log() if ' CQRS is ' in line]


def test_publish_failed_receiver_logs_the_original_error_line(cqrs_log):
    """message_publish_failed is logged as the original's ERROR line, with the traceback."""
    from dj_cqrs.dataclasses import TransportPayload

    payload = TransportPayload('SAVE', 'golden_parent', {'id': 3}, 3)
    try:
        raise ConnectionError('broker down')
    except ConnectionError as err:
        error = err
    signals.message_publish_failed.send(None, payload=payload, error=error, kept=True)
    assert cqrs_log() == ["ERROR CQRS couldn't be published: pk = 3 (golden_parent)."]


@pytest.mark.parametrize(
    'transport', ['dj_cqrs.transport.RabbitMQTransport', 'dj_cqrs.transport.KombuTransport']
)
@pytest.mark.django_db(transaction=True)
def test_failed_publish_sends_publish_failed_once(events, cqrs_log, transport):
    """A broker that refuses the connection: one publish_failed (kept in the outbox), one line."""
    config = {
        **cqrs_settings(transport, 'replica'),
        'url': 'amqp://guest:guest@127.0.0.1:1/',
    }
    # The synchronous path: the failure is known inside produce() (async: the next test).
    config['master'] = {
        **config['master'],
        'CQRS_PUBLISH_RETRIES': 0,
        'CQRS_PUBLISH_CONFIRMS': 'sync',
    }
    with override_settings(CQRS=config):
        GoldenParent.objects.create(id=4, name='four')
        from dj_cqrs.transport import get_transport

        get_transport().clean_connection()

    assert [name for name, _, _ in events] == ['publish_failed']
    (failed,) = named(events, 'publish_failed')
    assert ids(failed['payload']) == ('golden_parent', 4, 0, 'corr:SAVE:golden_parent:4')
    assert failed['kept'] is True
    assert failed['error'] is not None
    errors = [line for line in cqrs_log() if line.startswith("ERROR CQRS couldn't be published")]
    assert errors == ["ERROR CQRS couldn't be published: pk = 4 (golden_parent)."]


@pytest.mark.django_db(transaction=True)
def test_failed_async_publish_sends_publish_failed_once(events):
    """Asynchronous confirms (the default): the publishing thread gives up after the retries,
    keeps the message in the outbox and announces it once, with the broker's error."""
    from dj_cqrs.models import OutboxMessage
    from dj_cqrs.transport import async_publisher

    config = {
        **cqrs_settings('dj_cqrs.transport.RabbitMQTransport', 'replica'),
        'url': 'amqp://guest:guest@127.0.0.1:1/',
    }
    config['master'] = {**config['master'], 'CQRS_PUBLISH_RETRIES': 1}
    async_publisher._publisher.shutdown(2)
    events.clear()  # what an earlier test left to the publishing thread is not this test's
    try:
        with override_settings(CQRS=config):
            GoldenParent.objects.create(id=5, name='five')
            assert async_publisher.flush(15)
    finally:
        async_publisher._publisher.shutdown(2)
    assert [name for name, _, _ in events] == ['publish_failed']
    (failed,) = named(events, 'publish_failed')
    assert ids(failed['payload']) == ('golden_parent', 5, 0, 'corr:SAVE:golden_parent:5')
    assert failed['kept'] is True
    assert 'ConnectionRefusedError' in str(failed['error'])
    assert list(OutboxMessage.objects.values_list('instance_pk', flat=True)) == ['5']


def test_transport_subclass_overriding_logging_mixin_is_honoured(cqrs_log):
    """As with the original, a transport subclass overriding log_consumed replaces that line."""
    from dj_cqrs.dataclasses import TransportPayload
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

    seen = []

    class Recording(RabbitMQTransport):
        @staticmethod
        def log_consumed(payload):
            seen.append(payload.pk)

    payload = TransportPayload('SAVE', 'golden_parent', {'id': 6}, 6)
    signals.message_received.send(Recording, payload=payload, routing_key='golden_parent')
    signals.message_failed.send(Recording, payload=payload, error=None, retries=0)
    assert seen == [6]
    assert cqrs_log() == [
        'WARNING CQRS is failed: pk = 6 (golden_parent), correlation_id = None, retries = 0.'
    ]


@pytest.mark.parametrize(
    'path',
    [
        'dj_cqrs.transport.rabbit_mq.RabbitMQTransport',
        'dj_cqrs.transport.kombu.KombuTransport',
        'dj_cqrs.transport.inprocess.InProcessTransport',
    ],
)
def test_every_transport_subclass_can_override_each_log_hook(path, cqrs_log):
    """Every broker transport is a LoggingMixin, as in the original: each ``log_*`` override
    of a subclass is what writes the line, and ``super()`` reaches the mixin's words."""
    from django.utils.module_loading import import_string

    from dj_cqrs.dataclasses import TransportPayload

    seen = []

    class Recording(import_string(path)):
        @classmethod
        def log_consumed_failed(cls, payload):
            seen.append('failed')
            super().log_consumed_failed(payload)

        @classmethod
        def log_dead_letter(cls, payload):
            seen.append('dead_letter')
            super().log_dead_letter(payload)

        @classmethod
        def log_requeued(cls, payload):
            seen.append('requeued')

    payload = TransportPayload('SAVE', 'golden_parent', {'id': 6}, 6)
    signals.message_failed.send(Recording, payload=payload, error=None, retries=0)
    signals.message_requeued.send(Recording, payload=payload)
    signals.message_dead_lettered.send(Recording, payload=payload, reason='test')
    assert seen == ['failed', 'requeued', 'dead_letter']
    assert cqrs_log() == [
        'WARNING CQRS is failed: pk = 6 (golden_parent), correlation_id = None, retries = 0.',
        'WARNING CQRS is added to dead letter queue: pk = 6 (golden_parent), '
        'correlation_id = None.',
    ]
