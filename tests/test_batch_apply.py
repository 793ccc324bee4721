"""Batched replica apply: same rows, outcomes and log lines as one-by-one, in fewer statements."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext

from dj_cqrs.consumer.batch import Delivery, apply_batch, bulk_eligible
from dj_cqrs.consumer.handler import Action
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.models import Tombstone
from tests.dj_replica.models import (
    AuthorReplica,
    BookReplica,
    GoldenFieldsReplica,
    GoldenParentReplica,
)

UPDATED = '2024-05-01T10:00:00+00:00'


def body(cqrs_id, pk, revision, signal='SAVE', previous=None, meta=None, **fields):
    data = {'id': pk, 'cqrs_revision': revision, 'cqrs_updated': UPDATED, **fields}
    payload = TransportPayload(
        signal, cqrs_id, data, pk, previous_data=previous, meta=meta, correlation_id=f'c{pk}'
    )
    return Delivery(payload.encode(), cqrs_id)


def parent(pk, revision, name='n', signal='SAVE'):
    return body('golden_parent', pk, revision, signal=signal, name=name)


def actions(outcomes):
    return [o.action for o in outcomes]


def statement(sql):
    """The SQL of a captured query (an ``executemany`` is captured as ``N times: SQL``)."""
    head, sep, rest = sql.partition(' times: ')
    return rest if sep and head.isdigit() else sql


def inserts(queries):
    return [
        q
        for q in queries.captured_queries
        if statement(q['sql']).startswith('INSERT') and 'goldenparentreplica' in q['sql']
    ]


def rows():
    return {r.id: (r.name, r.cqrs_revision) for r in GoldenParentReplica.objects.order_by('id')}


@pytest.mark.django_db(transaction=True)
def test_batch_keeps_revision_order_per_row():
    """Create and updates of one row in a batch end at the last revision; other rows too."""
    outcomes = apply_batch(
        [parent(1, 0, 'a'), parent(2, 0, 'x'), parent(1, 1, 'b'), parent(1, 2, 'c')]
    )
    assert actions(outcomes) == [Action.ACK] * 4
    assert rows() == {1: ('c', 2), 2: ('x', 0)}


@pytest.mark.django_db(transaction=True)
def test_batch_outcomes_are_in_delivery_order():
    """Each delivery gets its own outcome at its own position, payload included."""
    deliveries = [parent(3, 0), Delivery(b'{not json', 'golden_parent'), parent(4, 0)]
    outcomes = apply_batch(deliveries)
    assert actions(outcomes) == [Action.ACK, Action.REJECT, Action.ACK]
    assert [o.payload.pk if o.payload else None for o in outcomes] == [3, None, 4]


@pytest.mark.django_db(transaction=True)
def test_batch_applies_old_and_duplicate_revisions_like_one_by_one(cqrs_log):
    """A late or repeated revision inside a batch is acked, logged and does not change the row."""
    GoldenParentReplica.objects.create(id=1, name='old', cqrs_revision=0, cqrs_updated=UPDATED)
    outcomes = apply_batch([parent(1, 2, 'new'), parent(1, 1, 'late'), parent(1, 2, 'again')])
    assert actions(outcomes) == [Action.ACK] * 3
    assert rows() == {1: ('new', 2)}
    lines = cqrs_log()
    assert (
        'WARNING Lost or filtered out 1 CQRS packages: pk = 1, cqrs_revision = 2 (golden_parent)'
        in lines
    )
    assert (
        'ERROR Wrong CQRS sync order: pk = 1, cqrs_revision = new 1 / existing 2 (golden_parent).'
        in lines
    )
    assert 'ERROR Received duplicate CQRS data: pk = 1, cqrs_revision = 2 (golden_parent).' in lines


def _run_scenario():
    GoldenParentReplica.objects.create(id=1, name='old', cqrs_revision=3, cqrs_updated=UPDATED)
    return apply_batch(
        [
            parent(1, 5, 'five'),
            parent(2, 0, 'two'),
            parent(1, 4, 'late'),
            body('golden_parent', 3, 0),  # no name: not all required fields
            parent(2, 0, 'dup'),
            body('golden_parent', 1, 1, signal='SYNC', name='synced'),
            parent(4, 0, 'four'),
            parent(4, 1, 'four-1', signal='DELETE'),
            parent(5, 0, 'five'),
        ]
    )


@pytest.mark.django_db(transaction=True)
def test_batch_log_lines_and_outcomes_equal_one_by_one(cqrs_log, caplog, batch_size):
    """The same deliveries give the same rows, outcomes and log lines in batch and one-by-one."""
    batched = _run_scenario()
    batched_lines, batched_rows = sorted(cqrs_log()), rows()
    caplog.clear()
    GoldenParentReplica.objects.all().delete()
    Tombstone.objects.all().delete()  # run 1 deleted row 4: its tombstone would block run 2

    batch_size(1)
    single = _run_scenario()
    assert [(o.action, o.payload.pk) for o in batched] == [(o.action, o.payload.pk) for o in single]
    assert batched_rows == rows() == {1: ('synced', 1), 2: ('two', 0), 5: ('five', 0)}
    assert batched_lines == sorted(cqrs_log())
    assert actions(batched)[3] is Action.RETRY


@pytest.mark.django_db(transaction=True)
def test_batch_lines_of_each_message_stay_together(cqrs_log):
    """A message's rule line comes between its received and applied lines, as one by one."""
    GoldenParentReplica.objects.create(id=7, name='old', cqrs_revision=1, cqrs_updated=UPDATED)
    apply_batch([parent(8, 0), parent(7, 0, 'late'), parent(9, 0)])
    lines = [line for line in cqrs_log() if 'pk = 7' in line]
    assert lines == [
        'INFO CQRS is received: pk = 7 (golden_parent), correlation_id = c7.',
        'ERROR Wrong CQRS sync order: pk = 7, cqrs_revision = new 0 / existing 1 (golden_parent).',
        'INFO CQRS is applied: pk = 7 (golden_parent), correlation_id = c7.',
    ]


@pytest.mark.django_db(transaction=True)
def test_bad_message_fails_alone_and_the_others_apply(cqrs_log):
    """A message the database refuses fails (retry) alone; the rest of the batch is applied."""
    outcomes = apply_batch([parent(1, 0, 'a'), parent(2, 0, None), parent(3, 0, 'c')])
    assert actions(outcomes) == [Action.ACK, Action.RETRY, Action.ACK]
    assert rows() == {1: ('a', 0), 3: ('c', 0)}
    assert any(
        line.startswith('ERROR ') and line.endswith('CQRS create error: pk = 2 (golden_parent).')
        for line in cqrs_log()
    )


@pytest.mark.django_db(transaction=True)
def test_bad_message_fails_alone_among_updates():
    """An update the database refuses fails alone; updates of other rows in the batch apply."""
    for pk in (1, 2):
        GoldenParentReplica.objects.create(id=pk, name='old', cqrs_revision=0, cqrs_updated=UPDATED)
    outcomes = apply_batch([parent(1, 1, None), parent(2, 1, 'new')])
    assert actions(outcomes) == [Action.RETRY, Action.ACK]
    assert rows() == {1: ('old', 0), 2: ('new', 1)}


@pytest.mark.django_db(transaction=True)
def test_bulk_path_uses_a_constant_number_of_statements():
    """Fifty creates are one read and one insert, not fifty transactions."""
    with CaptureQueriesContext(connection) as queries:
        outcomes = apply_batch([parent(pk, 0, f'p{pk}') for pk in range(1, 51)])
    assert actions(outcomes) == [Action.ACK] * 50
    assert len(rows()) == 50
    assert len(inserts(queries)) == 1
    sql = [q['sql'] for q in queries.captured_queries]
    assert len([q for q in sql if 'goldenparentreplica' in q]) == 2  # one read, one insert
    assert len([q for q in sql if 'tombstone' in q or 'advisory' in q]) <= 2


@pytest.mark.django_db(transaction=True)
def test_a_lone_message_takes_the_prepared_path_with_one_by_one_results(
    cqrs_log, caplog, batch_size, settings
):
    """At low rates the queue holds one message at a time: it is written by the same prepared
    statements as a batch (no ORM re-reads: the latency of one change), with the rows, outcome
    and log lines of one-by-one apply."""
    # The replica state is written at most once a second: not inside one window only.
    settings.CQRS = {
        **settings.CQRS,
        'replica': {**settings.CQRS.get('replica', {}), 'CQRS_STATE_FLUSH_INTERVAL': 3600},
    }
    with CaptureQueriesContext(connection) as lone:
        outcome = apply_batch([parent(1, 0, 'one')])
    with CaptureQueriesContext(connection) as fifty:
        apply_batch([parent(pk, 0, f'p{pk}') for pk in range(10, 60)])
    assert actions(outcome) == [Action.ACK]
    assert len(lone.captured_queries) == len(fifty.captured_queries)
    lone_lines, lone_rows = sorted(line for line in cqrs_log() if 'pk = 1 ' in line), rows()[1]
    GoldenParentReplica.objects.all().delete()
    caplog.clear()

    batch_size(1)
    assert actions(apply_batch([parent(1, 0, 'one')])) == [Action.ACK]
    assert rows()[1] == lone_rows == ('one', 0)
    assert sorted(line for line in cqrs_log() if 'pk = 1 ' in line) == lone_lines
    assert len(lone_lines) == 2  # received, applied


@pytest.mark.django_db(transaction=True)
def test_batch_size_one_is_one_transaction_per_message(batch_size):
    """With CQRS_BATCH_SIZE 1 every message is read and written on its own."""
    batch_size(1)
    with CaptureQueriesContext(connection) as queries:
        outcomes = apply_batch([parent(pk, 0) for pk in range(1, 6)])
    assert actions(outcomes) == [Action.ACK] * 5
    assert len(inserts(queries)) == 5


@pytest.mark.django_db(transaction=True)
def test_deletes_in_a_batch_keep_row_order():
    """Create, delete and re-create of rows in one batch end as one by one would."""
    outcomes = apply_batch(
        [parent(1, 0, 'a'), parent(2, 0, 'b'), parent(1, 1, signal='DELETE'), parent(3, 0, 'c')]
    )
    assert actions(outcomes) == [Action.ACK] * 4
    assert rows() == {2: ('b', 0), 3: ('c', 0)}


def test_custom_hook_and_flag_models_are_not_bulk_eligible():
    """Models with custom hooks or flags that change writes take the one-by-one path."""
    assert bulk_eligible(GoldenParentReplica)
    assert not bulk_eligible(GoldenFieldsReplica)  # cqrs_create/cqrs_update overridden
    assert not bulk_eligible(BookReplica)  # CQRS_CUSTOM_SERIALIZATION
    assert bulk_eligible(AuthorReplica)  # CQRS_SELECT_FOR_UPDATE: bulk reads lock the rows


@pytest.mark.django_db(transaction=True)
def test_custom_hooks_still_run_in_a_batch():
    """cqrs_create/cqrs_update overrides receive meta, previous_data and sync in a batch."""
    deliveries = [
        body('golden_fields', 1, 0, title='t', amount=1, meta={'m': 1}),
        parent(5, 0),
        body('golden_fields', 1, 1, title='u', amount=2, previous={'title': 't'}, meta={'m': 2}),
    ]
    assert actions(apply_batch(deliveries)) == [Action.ACK] * 3
    row = GoldenFieldsReplica.objects.get(id=1)
    assert (row.title, row.cqrs_revision, row.last_meta) == ('u', 1, {'m': 2})
    assert row.last_previous == {'title': 't'}
    assert row.last_sync is False


@pytest.mark.django_db(transaction=True)
def test_models_with_save_receivers_keep_their_signals():
    """A replica model with a post_save receiver is applied one by one, so the receiver runs."""
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.pk)

    post_save.connect(receiver, sender=GoldenParentReplica)
    try:
        assert not bulk_eligible(GoldenParentReplica)
        apply_batch([parent(1, 0), parent(2, 0)])
    finally:
        post_save.disconnect(receiver, sender=GoldenParentReplica)
    assert seen == [1, 2]
    assert bulk_eligible(GoldenParentReplica)


@pytest.mark.django_db(transaction=True)
def test_late_save_of_a_deleted_row_is_not_restored_in_a_batch(cqrs_log):
    """A tombstoned row is not created again by an older SAVE in a batch; other rows apply."""
    apply_batch([parent(1, 0, 'a'), parent(1, 3, signal='DELETE')])
    outcomes = apply_batch([parent(1, 2, 'late'), parent(2, 0, 'b'), parent(3, 0, 'c')])
    assert actions(outcomes) == [Action.ACK] * 3
    assert rows() == {2: ('b', 0), 3: ('c', 0)}
    assert any('CQRS deleted data is not restored: pk = 1' in line for line in cqrs_log())


# Through the real RabbitMQ consumer loop --------------------------------------------------


class RabbitRun:
    """A unique exchange and queue, messages published to it, the consumer run until done."""

    url = 'amqp://guest:guest@127.0.0.1:5672/'

    def __init__(self, batch_size):
        import uuid

        suffix = uuid.uuid4().hex[:8]
        self.queue, self.exchange = f'batch_{suffix}', f'cqrs_batch_{suffix}'
        self.cqrs = {
            'transport': 'dj_cqrs.transport.RabbitMQTransport',
            'url': self.url,
            'queue': self.queue,
            'exchange': self.exchange,
            'replica': {'CQRS_MAX_RETRIES': 0, 'CQRS_BATCH_SIZE': batch_size},
        }
        self.batches = []

    def channel(self):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        return connection, connection.channel()

    def publish(self, deliveries):
        from dj_cqrs.conf import get_settings
        from dj_cqrs.transport.amqp import topology_for

        connection, channel = self.channel()
        try:
            topology_for(get_settings()).declare(channel)
            for delivery in deliveries:
                channel.basic_publish(self.exchange, delivery.routing_key, delivery.body)
        finally:
            connection.close()

    def consume_until(self, applied, timeout=20.0, until=None):
        """Run the consumer until ``applied`` messages were applied; returns the seconds."""
        import threading
        import time

        from dj_cqrs import signals
        from dj_cqrs.consumer.loop import ConsumerLoop
        from dj_cqrs.transport import get_transport, rabbit_consumer

        batches = self.batches
        count = [0]

        class Loop(ConsumerLoop):
            def decide(self, deliveries):
                batches.append(len(deliveries))
                return super().decide(deliveries)

        class Consumer(rabbit_consumer.RabbitConsumer):
            handler_thread = False  # apply in this thread, on the test's database connection

            def loop(self):
                return Loop(self.transport, self, rabbit_consumer._stop, self.idle_tick)

        def on_applied(sender, **kwargs):
            count[0] += 1
            if count[0] >= applied:
                rabbit_consumer.request_stop()

        def on_until(sender, **kwargs):
            rabbit_consumer.request_stop()

        signal = until or signals.message_applied
        signal.connect(on_until if until else on_applied, weak=False)
        timer = threading.Timer(timeout, rabbit_consumer.request_stop)
        timer.start()
        began = time.monotonic()
        try:
            Consumer(get_transport()).run()
        finally:
            timer.cancel()
            signal.disconnect(on_until if until else on_applied)
        return time.monotonic() - began

    def cleanup(self):
        connection, channel = self.channel()
        try:
            channel.queue_delete(self.queue)
            channel.queue_delete(f'dead_letter_{self.queue}')
            channel.exchange_delete(self.exchange)
        finally:
            connection.close()


@pytest.fixture
def rabbit_run(settings):
    from tests.services import require

    require('rabbitmq')
    runs = []

    def make(batch_size, **replica):
        run = RabbitRun(batch_size)
        run.cqrs['replica'].update(replica)
        settings.CQRS = run.cqrs
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.cleanup()


@pytest.mark.django_db(transaction=True)
def test_partial_batch_is_applied_as_soon_as_the_queue_is_idle(rabbit_run):
    """Three messages with CQRS_BATCH_SIZE 100 are applied at once, not after a full batch."""
    run = rabbit_run(100)
    run.publish([parent(1, 0, 'a'), parent(2, 0, 'b'), parent(3, 0, 'c')])
    seconds = run.consume_until(applied=3)
    assert rows() == {1: ('a', 0), 2: ('b', 0), 3: ('c', 0)}
    assert sum(run.batches) == 3
    assert seconds < 3.0


@pytest.mark.django_db(transaction=True)
def test_consumer_applies_a_full_queue_in_batches_of_the_setting(rabbit_run):
    """A queue of 250 messages is applied in batches of at most CQRS_BATCH_SIZE (100)."""
    run = rabbit_run(100)
    run.publish([parent(pk, 0, f'p{pk}') for pk in range(1, 251)])
    run.consume_until(applied=250)
    assert len(rows()) == 250
    assert sum(run.batches) == 250
    assert max(run.batches) <= 100
    assert len(run.batches) < 50


@pytest.mark.django_db(transaction=True)
def test_bulk_row_locks_are_the_tombstone_row_locks():
    """Bulk creates take the same row locks as one-by-one creates and deletes (PostgreSQL
    advisory locks, MariaDB/MySQL named locks): another worker waits for them."""
    from django.db import transaction

    from dj_cqrs.replica.tombstones import lock_rows
    from tests.test_convergence import lock_is_free

    if connection.vendor not in ('postgresql', 'mysql'):
        pytest.skip(f'{connection.vendor} has no row locks for tombstones (one writer at a time)')
    with transaction.atomic():
        lock_rows(GoldenParentReplica, ['41', '42'], 'default')
        assert not lock_is_free(42)
        assert lock_is_free(43)
    assert lock_is_free(42)


@pytest.mark.django_db(transaction=True)
def test_batches_acked_together_never_ack_a_message_waiting_for_its_retry(rabbit_run, cqrs_log):
    """While a failed message waits for its retry, later batches do not acknowledge it."""
    import threading

    from dj_cqrs import signals

    run = rabbit_run(100, CQRS_MAX_RETRIES=1, CQRS_RETRY_DELAY=1)
    run.publish([body('golden_fail', 9, 0, name='x'), parent(1, 0, 'a')])
    later = threading.Timer(0.3, run.publish, [[parent(2, 0, 'b'), parent(3, 0, 'c')]])
    later.start()
    try:
        run.consume_until(applied=None, until=signals.message_dead_lettered)
    finally:
        later.cancel()
    assert rows() == {1: ('a', 0), 2: ('b', 0), 3: ('c', 0)}
    lines = cqrs_log()
    assert 'WARNING CQRS is requeued: pk = 9 (golden_fail), correlation_id = c9.' in lines
    assert any('added to dead letter queue: pk = 9 (golden_fail)' in line for line in lines)
    assert not any('Reconnecting' in line for line in lines)
    assert max(run.batches) >= 2  # the later messages were acknowledged as one batch
