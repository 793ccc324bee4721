"""KombuTransport connections: one per process, failover URLs, broker loss, clean stop."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import threading

import kombu
import pytest
from django.test import override_settings
from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PublishError
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.kombu import KombuTransport, mask_url
from dj_cqrs.transport.kombu_consumer import KombuWorker
from tests import kombu_fixtures
from tests.dj_replica.models import GoldenParentReplica
from tests.kombu_fixtures import kombu_settings, make_broker

broker = kombu_fixtures.broker
real_broker = kombu_fixtures.real_broker

pytestmark = pytest.mark.django_db(transaction=True)


def parent(pk):
    data = {'id': pk, 'name': f'p{pk}', 'cqrs_revision': 0}
    data['cqrs_updated'] = '2024-02-29 13:45:30+00:00'
    expires = timezone.now() + datetime.timedelta(days=1)
    return TransportPayload('SAVE', 'golden_parent', data, pk, expires=expires)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize('scheme', ['amqp', 'redis'])
def test_unreachable_broker_raises_publish_error_with_password_masked(scheme, cqrs_log):
    """After its bounded retries a publish raises PublishError; the password never shows."""
    url = f'{scheme}://guest:s3cret@127.0.0.1:{free_port()}/'
    failed = []
    signals.message_publish_failed.connect(
        lambda sender, **kw: failed.append(kw), weak=False, dispatch_uid='kombu-failed'
    )
    try:
        with override_settings(CQRS=kombu_settings(url, 'down')):
            with pytest.raises(PublishError) as info:
                KombuTransport.produce(parent(1))
    finally:
        signals.message_publish_failed.disconnect(dispatch_uid='kombu-failed')

    assert info.value.payload.pk == 1
    assert 's3cret' not in str(info.value) and '****' in str(info.value)
    # The transport only raises: the outbox announces the failure once (with ``kept``).
    assert failed == []
    lines = cqrs_log()
    assert "WARNING CQRS couldn't be published: pk = 1 (golden_parent). Error: " in lines[0]
    assert lines[0].endswith('. Reconnect...')
    assert not any('s3cret' in line for line in lines)


def test_mask_url_hides_every_password_of_a_failover_list():
    """Every URL of a ';'-separated failover list has its password masked."""
    text = mask_url('amqp://u:p1@h1:5672//;amqp://u:p2@h2//;redis://:p3@h3:6379/0')
    assert text == 'amqp://u:****@h1:5672//;amqp://u:****@h2//;redis://:****@h3:6379/0'


@pytest.mark.parametrize('name', ['amqp', 'redis'])
def test_failover_url_publishes_to_the_next_broker(name):
    """With ';'-separated URLs, a publish reaches the first broker that answers."""
    first = f'{name}://guest:guest@127.0.0.1:{free_port()}/'
    good = kombu_fixtures.URLS[name]
    for broker in make_broker(name, url=f'{first};{good}'):
        broker.declare()
        KombuTransport.produce(parent(1))
        assert [m.delivery_info['routing_key'] for m in broker.get_all(broker.queue)] == [
            'golden_parent'
        ]


def test_one_connection_per_process_is_reused(real_broker):
    """Publishing many messages uses one connection, reopened only after a reset."""
    real_broker.declare()
    KombuTransport.produce(parent(1))
    first = kombu_transport._producer._connection
    for pk in range(2, 21):
        KombuTransport.produce(parent(pk))
    assert kombu_transport._producer._connection is first
    assert len(real_broker.get_all(real_broker.queue)) == 20

    KombuTransport.clean_connection()
    KombuTransport.produce(parent(21))
    assert kombu_transport._producer._connection is not first


def test_forked_child_publishes_on_its_own_connection(real_broker):
    """A forked process never writes on its parent's socket: both keep publishing."""
    real_broker.declare()
    KombuTransport.produce(parent(1))
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            KombuTransport.produce(parent(2))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    KombuTransport.produce(parent(3))

    assert os.waitstatus_to_exitcode(status) == 0
    messages = real_broker.get_all(real_broker.queue)
    assert sorted(json.loads(kombu_fixtures.body_of(m))['instance_pk'] for m in messages) == [
        1,
        2,
        3,
    ]


def test_publish_recovers_from_a_dropped_connection(real_broker, cqrs_log):
    """When the broker drops the publishing connection, the next publish reconnects."""
    real_broker.declare()
    KombuTransport.produce(parent(1))
    _drop(kombu_transport._producer._connection)

    assert KombuTransport.produce(parent(2)) is True
    assert len(real_broker.get_all(real_broker.queue)) == 2


def test_worker_reconnects_after_losing_the_broker(real_broker, cqrs_log):
    """A worker whose connection drops logs it, reconnects and goes on consuming."""
    real_broker.declare()
    worker = KombuWorker()
    KombuTransport.produce(parent(1))
    dropped = []

    def until():
        count = GoldenParentReplica.objects.count()
        if count == 1 and not dropped:
            dropped.append(True)
            _drop(worker.connection)
            KombuTransport.produce(parent(2))
        return count == 2

    real_broker.run_worker(until=until, worker=worker, timeout=20)

    assert GoldenParentReplica.objects.count() == 2
    assert any('CQRS consumer connection error' in line for line in cqrs_log())


def test_worker_keeps_retrying_while_the_broker_is_unreachable(cqrs_log):
    """Without a broker the worker keeps trying (bounded backoff) until it is stopped."""
    url = f'amqp://guest:s3cret@127.0.0.1:{free_port()}//'
    with override_settings(CQRS=kombu_settings(url, 'down')):
        worker = KombuWorker()
        timer = threading.Timer(2.5, worker.stop)
        timer.start()
        worker.run()
        timer.cancel()
    errors = [line for line in cqrs_log() if 'CQRS consumer connection error' in line]
    assert len(errors) >= 2
    assert not any('s3cret' in line for line in cqrs_log())


def test_sigterm_stops_the_worker_and_restores_the_handler(broker):
    """SIGTERM ends ``consume()`` cleanly; the previous signal handler is put back."""
    broker.declare()
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        KombuTransport.consume()
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGTERM) is before


def _drop(connection) -> None:
    """Cut a kombu connection, as a broker restart or a network failure would."""
    sock = getattr(connection.connection, 'sock', None)
    if sock is not None:  # py-amqp
        sock.shutdown(socket.SHUT_RDWR)
        return
    # Redis: kill every client of the test database (db 11), from a client on another db.
    import redis

    admin = redis.Redis(host='127.0.0.1', port=6379, db=0)
    for client in admin.client_list():
        if str(client.get('db')) == '11':
            admin.client_kill_filter(_id=client['id'])
    admin.close()


def test_publishes_from_many_threads_all_arrive(real_broker):
    """Threads publishing at once share the process's connection safely; nothing is lost."""
    real_broker.declare()
    errors = []

    def publish_range(start):
        try:
            for pk in range(start, start + 25):
                KombuTransport.produce(parent(pk))
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=publish_range, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    messages = real_broker.get_all(real_broker.queue)
    pks = sorted(json.loads(kombu_fixtures.body_of(m))['instance_pk'] for m in messages)
    assert pks == sorted(n * 100 + i for n in range(4) for i in range(25))


def test_broker_nack_is_a_publish_error(cqrs_log):
    """Publishes wait for RabbitMQ's confirm: a message the broker refuses raises PublishError."""
    for broker in make_broker('amqp'):
        full = f'{broker.queue}_full'
        with kombu_transport.connect() as connection:
            queue = kombu.Queue(
                full,
                exchange=kombu_transport.exchange(),
                routing_key='golden_parent',
                queue_arguments={'x-max-length': 1, 'x-overflow': 'reject-publish'},
            )
            queue(connection.default_channel).declare()
        try:
            KombuTransport.produce(parent(1))
            with pytest.raises(PublishError):
                KombuTransport.produce(parent(2))
        finally:
            with kombu_transport.connect() as connection:
                kombu.Queue(full, no_declare=True)(connection.default_channel).delete()
    assert any('Error: MessageNacked. Reconnect...' in line for line in cqrs_log())
