"""``cqrs_status``: what it reports, its thresholds and exit status, its JSON."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from dj_cqrs.models import OutboxMessage, ReplicaState
from dj_cqrs.observability import lag
from dj_cqrs.observability.status import (
    CqrsIdStatus,
    QueueStats,
    Status,
    collect,
    estimate_lag,
    problems,
)
from dj_cqrs.transport import BaseTransport, InProcessTransport
from tests.dj_master.models import GoldenFail, GoldenParent
from tests.services import require


@pytest.fixture(autouse=True)
def _fresh_tracker():
    lag.tracker.discard()
    yield
    lag.tracker.discard()


def run(*args):
    """(exit code, stdout, stderr) of ``cqrs_status <args>``."""
    out, err = StringIO(), StringIO()
    try:
        call_command('cqrs_status', *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, out.getvalue(), err.getvalue()


def state(cqrs_id, lag_seconds, applied_ago=1.0, revision=4, pk='9'):
    now = timezone.now()
    applied = now - timedelta(seconds=applied_ago)
    return ReplicaState.objects.create(
        cqrs_id=cqrs_id,
        last_pk=pk,
        last_revision=revision,
        last_applied_at=applied,
        last_master_updated=applied - timedelta(seconds=lag_seconds),
        last_lag=lag_seconds,
        applied_count=10,
    )


@pytest.mark.django_db(transaction=True)
def test_healthy_service_prints_table_and_exits_zero():
    """After applied saves: a table with last pk, revision and count per cqrs_id, exit 0."""
    GoldenParent.objects.create(id=1, name='a')
    GoldenParent.objects.create(id=2, name='b')
    code, out, err = run('--max-lag', '60', '--max-dead-letters', '0', '--max-queue', '0')
    assert (code, err) == (0, '')
    assert out.splitlines()[0] == 'Transport     InProcessTransport (in process)'
    assert 'Queue         replica: 0 waiting' in out
    assert 'Dead letters  dead_letter_replica: 0 waiting' in out
    assert 'Outbox        0 waiting' in out
    row = next(line for line in out.splitlines() if line.startswith('golden_parent '))
    assert row.split()[:6] == ['golden_parent', 'master+replica', '0', '2', '2', '0']
    header = next(line for line in out.splitlines() if line.startswith('CQRS_ID'))
    assert header.split('  ')[0] == 'CQRS_ID'


@pytest.mark.django_db
def test_json_output_has_every_number():
    """--json prints one object with queue, dead letters, outbox, lag and each cqrs_id."""
    state('golden_parent', 0.25)
    code, out, _ = run('--json')
    data = json.loads(out)
    assert code == 0
    assert data['queue'] == {'name': 'replica', 'messages': 0, 'consumers': None, 'exists': True}
    assert data['dead_letters']['messages'] == 0
    assert data['outbox_count'] == 0
    assert data['lag'] == 0.25
    assert data['problems'] == []
    parent = next(item for item in data['cqrs_ids'] if item['cqrs_id'] == 'golden_parent')
    assert (parent['last_pk'], parent['last_revision'], parent['applied_count']) == ('9', 4, 10)
    assert parent['master'] and parent['replica']


@pytest.mark.django_db
def test_max_lag_exceeded_exits_one_with_reason():
    """A replica 120 s behind fails --max-lag 60 with exit 1 and one line saying why."""
    state('golden_parent', 120.0)
    code, out, err = run('--max-lag', '60')
    assert code == 1
    assert err == 'cqrs_status: replication lag 120.0 s exceeds --max-lag 60\n'
    assert 'Lag           2m00s' in out


@pytest.mark.django_db(transaction=True)
def test_dead_letters_threshold():
    """A dead-lettered message fails --max-dead-letters 0 and passes --max-dead-letters 1."""
    GoldenFail.objects.create(name='doomed')
    code, _, err = run('--max-dead-letters', '0')
    assert code == 1
    assert err == (
        'cqrs_status: dead-letter queue dead_letter_replica has 1 messages, '
        'more than --max-dead-letters 0\n'
    )
    assert run('--max-dead-letters', '1')[0] == 0


@pytest.mark.django_db
def test_outbox_backlog_and_age_threshold():
    """Outbox rows show as backlog per cqrs_id; an old one fails --max-outbox-age."""
    for pk in (1, 2):
        OutboxMessage.objects.create(
            cqrs_id='golden_parent',
            signal_type='SAVE',
            instance_pk=str(pk),
            routing_key='golden_parent',
            body='{}',
        )
    OutboxMessage.objects.update(created=timezone.now() - timedelta(seconds=600))
    status = collect()
    assert status.outbox_count == 2
    assert 599 < status.outbox_oldest_age < 700
    parent = next(item for item in status.cqrs_ids if item.cqrs_id == 'golden_parent')
    assert parent.outbox == 2
    code, out, err = run('--max-outbox-age', '300')
    assert code == 1
    assert err.startswith('cqrs_status: oldest outbox message is 6')
    assert err.endswith('s old, more than --max-outbox-age 300 (2 waiting)\n')
    assert 'Outbox        2 waiting, oldest 10m0' in out


def test_lag_grows_with_the_time_since_the_last_change_while_messages_wait():
    """With messages waiting, the lag is the time since the newest applied master change."""
    now = timezone.now()
    applied = CqrsIdStatus(
        'a',
        replica=True,
        last_applied_at=now - timedelta(seconds=80),
        last_master_updated=now - timedelta(seconds=90),
        last_lag=10.0,
    )
    other = CqrsIdStatus(
        'b',
        replica=True,
        last_applied_at=now - timedelta(seconds=3000),
        last_master_updated=now - timedelta(seconds=3001),
        last_lag=1.0,
    )
    idle = Status(now, 'X', queue=QueueStats('q', 0), cqrs_ids=[applied, other])
    assert estimate_lag(idle) == 10.0
    busy = Status(now, 'X', queue=QueueStats('q', 250), cqrs_ids=[applied, other])
    busy.lag = estimate_lag(busy)
    assert busy.lag == pytest.approx(90.0)
    assert estimate_lag(Status(now, 'X', queue=QueueStats('q', 5))) is None
    assert problems(busy, max_lag=60) == ['replication lag 90.0 s exceeds --max-lag 60']
    assert problems(busy, max_lag=120, max_queue=250) == []
    assert problems(busy, max_queue=100) == [
        'queue q has 250 messages waiting, more than --max-queue 100'
    ]


def broker_settings(transport, url, queue):
    return {
        'transport': transport,
        'url': url,
        'queue': queue,
        'replica': {'CQRS_MAX_RETRIES': 2, 'CQRS_RETRY_DELAY': 0},
    }


TRANSPORTS = {
    'rabbitmq': 'dj_cqrs.transport.RabbitMQTransport',
    'kombu': 'dj_cqrs.transport.KombuTransport',
}


@pytest.mark.parametrize('transport', sorted(TRANSPORTS))
@pytest.mark.django_db
def test_unreachable_broker_exits_two_with_masked_url(transport):
    """No broker at the URL: exit 2, a clear line naming the broker, password masked."""
    url = 'amqp://guest:s3cret@127.0.0.1:1/'
    with override_settings(CQRS=broker_settings(TRANSPORTS[transport], url, 'replica')):
        code, out, err = run('--max-lag', '60')
    assert code == 2
    assert err.startswith('cqrs_status: cannot reach the broker at amqp://guest:****@127.0.0.1:1')
    assert 's3cret' not in out + err
    assert 'UNREACHABLE' in out


@pytest.mark.parametrize('transport', sorted(TRANSPORTS))
@pytest.mark.django_db
def test_queue_depth_and_consumers_from_rabbitmq(transport):
    """Messages waiting in this service's queue are counted; a missing DLQ is reported."""
    require('rabbitmq')
    import pika

    queue = f'status_{transport}_{uuid.uuid4().hex[:8]}'
    connection = pika.BlockingConnection(pika.URLParameters('amqp://guest:guest@127.0.0.1:5672/'))
    channel = connection.channel()
    try:
        channel.queue_declare(queue, durable=False, auto_delete=False)
        for index in range(3):
            channel.basic_publish('', queue, f'{{"n": {index}}}'.encode())
        url = 'amqp://guest:guest@127.0.0.1:5672/'
        with override_settings(CQRS=broker_settings(TRANSPORTS[transport], url, queue)):
            status = collect()
            code, _, err = run('--max-queue', '2')
    finally:
        channel.queue_delete(queue)
        connection.close()
    assert status.broker_error is None
    assert (status.queue.messages, status.queue.consumers) == (3, 0)
    assert status.dead_letters.exists is False
    assert code == 1
    assert err == f'cqrs_status: queue {queue} has 3 messages waiting, more than --max-queue 2\n'


class ProbedTransport(InProcessTransport):
    """A custom transport that can say how many messages wait in a queue."""

    @classmethod
    def queue_stats(cls, queue):
        return (7, 2) if not queue.startswith('dead_letter_') else (1, None)


class DeadLettersOnly(BaseTransport):
    """A custom transport that only counts its dead letters."""

    @classmethod
    def dead_letters_count(cls):
        return 4


@pytest.mark.django_db
def test_custom_transports_report_what_they_can():
    """queue_stats() is used when a transport has it; else only dead_letters_count()."""
    path = f'{__name__}.ProbedTransport'
    with override_settings(CQRS={'transport': path, 'queue': 'mine'}):
        status = collect()
    assert (status.queue.messages, status.queue.consumers) == (7, 2)
    assert status.dead_letters.messages == 1
    with override_settings(CQRS={'transport': f'{__name__}.DeadLettersOnly', 'queue': 'mine'}):
        status = collect()
    assert (status.queue.messages, status.dead_letters.messages) == (None, 4)
