"""`cqrs_dead_letters` and RabbitMQTransport's dead-letter operations."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import uuid

import pika
import pytest
from django.core.management import CommandError, call_command

from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.services import require

URL = 'amqp://guest:guest@127.0.0.1:5672/%2F'
DEAD = (
    b'{"signal_type":"SAVE","cqrs_id":"golden_fail","instance_data":{"id":1,"cqrs_revision":0,'
    b'"cqrs_updated":"2026-11-26 14:52:27.128868+00:00","name":"will fail on replica"},'
    b'"previous_data":null,"instance_pk":1,"correlation_id":null,"retries":1,'
    b'"expires":"2026-11-27T14:52:27+00:00","meta":{}}'
)


class FakeDeadLetters(BaseTransport):
    """A transport with a dead-letter queue in memory."""

    queue: list[bytes] = []
    retried: list[bytes] = []

    @classmethod
    def dead_letters_count(cls):
        return len(cls.queue)

    @classmethod
    def dead_letters_dump(cls):
        return list(cls.queue)

    @classmethod
    def dead_letters_retry(cls, report=None):
        total = len(cls.queue)
        for index, body in enumerate(list(cls.queue), 1):
            cls.retried.append(body)
            cls.queue.remove(body)
            report(index, total, body)
        return total

    @classmethod
    def dead_letters_purge(cls):
        count = len(cls.queue)
        cls.queue.clear()
        return count


def run(*args):
    out = io.StringIO()
    call_command('cqrs_dead_letters', *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def fake(settings):
    settings.CQRS = {**settings.CQRS, 'transport': f'{__name__}.FakeDeadLetters'}
    FakeDeadLetters.queue[:] = [DEAD, b'{"second":1}']
    FakeDeadLetters.retried.clear()
    return FakeDeadLetters


def test_transport_without_dead_letters_is_refused():
    """The in-process transport has no DLQ: the original's error, naming both transports."""
    with pytest.raises(CommandError) as err:
        run('dump')
    assert str(err.value) == (
        'Dead letters commands available only for RabbitMQTransport and KombuTransport.'
    )


def test_dump_prints_one_body_per_line(fake):
    """dump prints each dead letter as UTF-8 text on its own line, and removes nothing."""
    assert run('dump') == DEAD.decode() + '\n{"second":1}\n'
    assert len(fake.queue) == 2


def test_retry_prints_total_progress_and_bodies(fake):
    """retry: 'Total dead letters: N', then 'Retrying: i/N' and the body for each."""
    assert run('retry') == (
        f'Total dead letters: 2\nRetrying: 1/2\n{DEAD.decode()}\nRetrying: 2/2\n{{"second":1}}\n'
    )
    assert fake.queue == []


def test_purge_prints_total_and_purged_only_when_there_were_some(fake):
    """purge prints the total, and 'Purged' only if something was purged."""
    assert run('purge') == 'Total dead letters: 2\nPurged\n'
    assert run('purge') == 'Total dead letters: 0\n'


def test_a_subcommand_is_required():
    """No sub-command is an argparse error listing retry, dump, purge."""
    with pytest.raises(CommandError, match='retry,dump,purge|required'):
        call_command('cqrs_dead_letters')


@pytest.fixture
def rabbit(settings):
    """RabbitMQTransport settings on a private exchange and queue, cleaned up after."""
    require('rabbitmq')
    token = uuid.uuid4().hex[:8]
    exchange, queue = f'cqrs_ut_{token}', f'svc_{token}'
    settings.CQRS = {
        **settings.CQRS,
        'transport': 'dj_cqrs.transport.RabbitMQTransport',
        'url': URL,
        'exchange': exchange,
        'queue': queue,
    }
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    RabbitMQTransport.dead_letters_count()  # declares the topology
    yield channel, exchange, queue
    with contextlib.suppress(Exception):
        for name in (queue, f'dead_letter_{queue}'):
            channel.queue_delete(name)
        channel.exchange_delete(exchange)
        connection.close()


def test_rabbitmq_dead_letters_dump_retry_purge(rabbit, settings):
    """Over the real broker: dump leaves messages; retry republishes with retries 0 and a
    fresh expires to the requeue key, then removes the DLQ copy; purge empties."""
    channel, exchange, queue = rabbit
    master = settings.CQRS.get('master', {})
    settings.CQRS = {**settings.CQRS, 'master': {**master, 'CQRS_MESSAGE_TTL': 3600}}
    props = pika.BasicProperties(content_type='text/plain', delivery_mode=2, expiration='60000')
    channel.basic_publish(exchange, f'cqrs.dead_letter_{queue}.golden_fail', DEAD, props)
    assert RabbitMQTransport.dead_letters_count() == 1
    assert run('dump') == DEAD.decode() + '\n'
    assert RabbitMQTransport.dead_letters_count() == 1

    out = run('retry').splitlines()
    assert out[:2] == ['Total dead letters: 1', 'Retrying: 1/1']
    retried = json.loads(out[2])
    assert retried['retries'] == 0
    assert retried['expires'] != '2026-11-27T14:52:27+00:00'
    # As the original: a day from now, whatever CQRS_MESSAGE_TTL says.
    fresh = datetime.datetime.fromisoformat(retried['expires'])
    expected = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    assert abs((fresh - expected).total_seconds()) < 60
    assert RabbitMQTransport.dead_letters_count() == 0
    method, props, body = channel.basic_get(queue, auto_ack=True)
    assert method.routing_key == f'cqrs.{queue}.golden_fail'
    assert (props.content_type, props.delivery_mode, props.expiration) == ('text/plain', 2, None)
    assert json.loads(body) == retried

    channel.basic_publish(exchange, f'cqrs.dead_letter_{queue}.golden_fail', DEAD, props)
    assert RabbitMQTransport.dead_letters_count() == 1
    assert run('purge') == 'Total dead letters: 1\nPurged\n'
    assert run('dump') == ''


def test_rabbitmq_retry_that_cannot_be_routed_keeps_the_dead_letter(rabbit):
    """A dead letter whose id no longer has a binding is not lost by retry: error, it stays."""
    channel, exchange, queue = rabbit
    orphan = DEAD.replace(b'golden_fail', b'gone_model')
    channel.basic_publish('', f'dead_letter_{queue}', orphan)  # default exchange: by queue name
    with pytest.raises(CommandError, match='no queue is bound'):
        run('retry')
    assert RabbitMQTransport.dead_letters_count() == 1
    assert run('dump') == orphan.decode() + '\n'
