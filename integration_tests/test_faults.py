"""Fault injection against the real RabbitMQ and PostgreSQL: whatever fails, nothing is lost and
the replica ends equal to the master, row by row.

Each test prints one line of the table ``scenario | changes | applied | lost | duplicated``:

* ``changes``: changes the master committed (one message each);
* ``applied``: messages the replica workers applied and acked (``CQRS is applied`` lines);
* ``lost``: changes whose message never reached the broker (read from an audit queue bound to
  the same routing key as the replica), plus master rows the replica does not equal;
* ``duplicated``: messages the replica received again and ignored (``Received duplicate CQRS
  data`` lines): at-least-once delivery, never visible in the replica's rows.

The broker is stopped with ``rabbitmqctl stop_app`` in two tests; it is always started again in a
``finally`` block.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import psycopg
import pytest

from integration_tests import rabbit
from integration_tests.harness import PG, PYTHON, Consumer, Service, Stack, wait_until
from integration_tests.rabbit import broker_up, rabbitmqctl

MASTER_TABLE = 'masterapp_goldenparent'
REPLICA_TABLE = 'replicaapp_goldenparentreplica'
OUTBOX_TABLE = 'dj_cqrs_outboxmessage'
ROWS = 100

pytestmark = pytest.mark.slow

_table: list[str] = []


# --- helpers --------------------------------------------------------------------------------


@contextlib.contextmanager
def broker_stopped() -> Iterator[None]:
    """RabbitMQ down for the block (``stop_app``), always up again afterwards."""
    rabbitmqctl('stop_app')
    try:
        yield
    finally:
        rabbitmqctl('start_app')
        wait_until(broker_up, 90, what='RabbitMQ back after start_app')


class Audit:
    """A durable queue bound like the replica's: every message the exchange routed, kept."""

    def __init__(self, exchange: str) -> None:
        self.name = f'it_audit_{uuid.uuid4().hex[:8]}'
        with rabbit.channel() as ch:
            ch.exchange_declare(exchange, exchange_type='topic', durable=True)
            ch.queue_declare(self.name, durable=True)
            ch.queue_bind(self.name, exchange, routing_key='golden_parent')

    def messages(self) -> list[dict[str, Any]]:
        """Every message routed so far (taken off the queue), read with a prefetch window."""
        out: list[dict[str, Any]] = []
        with rabbit.channel() as ch:
            ch.basic_qos(prefetch_count=1000)
            for method, _, body in ch.consume(self.name, auto_ack=True, inactivity_timeout=1.0):
                if method is None:
                    break
                out.append(json.loads(body))
            ch.cancel()
        return out

    def close(self) -> None:
        rabbit.delete(self.name)


def declare_replica_queue(stack: Stack) -> None:
    """The replica's queue and binding, declared as the worker declares them (classic, durable)."""
    exchange = getattr(stack, 'exchange', rabbit.EXCHANGE)
    with rabbit.channel() as ch:
        ch.exchange_declare(exchange, exchange_type='topic', durable=True)
        ch.queue_declare(stack.queue, durable=True)
        ch.queue_bind(stack.queue, exchange, routing_key='golden_parent')


@pytest.fixture
def audit(stack: Stack) -> Iterator[Audit]:
    queue = Audit(getattr(stack, 'exchange', rabbit.EXCHANGE))
    yield queue
    queue.close()


def settings_env(**master: Any) -> dict[str, str]:
    return {'CQRS_IT_EXTRA': json.dumps({'master': master})} if master else {}


def run_master(stack: Stack, script: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A master process running ``script`` in ``manage.py shell`` (stdout: progress lines)."""
    return subprocess.Popen(
        [PYTHON, 'manage.py', 'shell', '-v', '0', '-c', script],
        cwd=stack.master.directory,
        env=stack.master.environ(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


CHANGES_SCRIPT = """
import sys, time
from django.db import transaction
from masterapp.models import GoldenParent as P
rows, total, pause = {rows}, {total}, {pause}
done = 0
for pk in range(1, rows + 1):
    with transaction.atomic():
        P.objects.create(id=pk, name=f'{{pk}}-0')
    done += 1
    if done % 50 == 0:
        print(done, flush=True)
    time.sleep(pause)
objs = {{p.pk: p for p in P.objects.all()}}
while done < total:
    pk = done % rows + 1
    with transaction.atomic():
        obj = objs[pk]
        obj.name = f'{{pk}}-{{done}}'
        obj.save()
    done += 1
    if done % 50 == 0:
        print(done, flush=True)
    time.sleep(pause)
print('finished', done, flush=True)
"""


def changes_script(total: int, pause: float = 0.0, rows: int = ROWS) -> str:
    return CHANGES_SCRIPT.format(rows=rows, total=total, pause=pause)


def read_progress(proc: subprocess.Popen, at_least: int, timeout: float) -> None:
    """Block until the master printed a progress count >= ``at_least``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.strip().isdigit() and int(line) >= at_least:
            return
    raise AssertionError(f'master did not reach {at_least} changes: {proc.stderr.read()}')


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f'master did not finish: {err[-3000:]}') from None
    assert proc.returncode == 0, err[-3000:]
    return out


def master_rows(master: Service) -> list[tuple]:
    return master.query(f'SELECT id, name, cqrs_revision FROM {MASTER_TABLE} ORDER BY id')


def replica_rows(replica: Service) -> list[tuple]:
    return replica.query(f'SELECT id, name, cqrs_revision FROM {REPLICA_TABLE} ORDER BY id')


def differing_rows(master: Service, replica: Service) -> int:
    theirs = {row[0]: row for row in replica_rows(replica)}
    ours = {row[0]: row for row in master_rows(master)}
    return sum(1 for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key))


def wait_converged(master: Service, replica: Service, timeout: float = 90) -> None:
    wait_until(
        lambda: differing_rows(master, replica) == 0,
        timeout,
        interval=0.5,
        what='replica equal to master',
    )


def outbox_count(service: Service) -> int:
    return service.query(f'SELECT count(*) FROM {OUTBOX_TABLE}')[0][0]


def count_in_logs(consumers: list[Consumer], text: str) -> int:
    return sum(c.log().count(text) for c in consumers)


def wire_stats(messages: list[dict[str, Any]]) -> tuple[set[tuple], int]:
    keys = [
        (m['signal_type'], m['instance_data']['id'], m['instance_data']['cqrs_revision'])
        for m in messages
    ]
    return set(keys), len(keys)


def report(
    request: pytest.FixtureRequest,
    scenario: str,
    changes: int,
    consumers: list[Consumer],
    lost: int,
) -> None:
    applied = count_in_logs(consumers, 'CQRS is applied')
    duplicated = count_in_logs(consumers, 'Received duplicate CQRS data')
    line = f'{scenario} | {changes} | {applied} | {lost} | {duplicated}'
    _table.append(line)
    emit(request, f'[faults] {line}')


def emit(request: pytest.FixtureRequest, *lines: str) -> None:
    """Write to the terminal even while pytest captures the test's output."""
    plugins = request.config.pluginmanager
    reporter = plugins.getplugin('terminalreporter')
    capture = plugins.getplugin('capturemanager')
    if reporter is None:
        return
    context = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with context:
        reporter.write_line('')
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope='module', autouse=True)
def _print_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if _table:
        emit(request, 'scenario | changes | applied | lost | duplicated', *_table)


def relay_until_empty(service: Service, env: dict[str, str] | None = None) -> None:
    def drained() -> bool:
        service.manage('cqrs_outbox', 'relay', '--once', env=env, timeout=120)
        return outbox_count(service) == 0

    wait_until(drained, 60, interval=0.5, what='outbox relayed')


# --- 1. broker down while the master commits ------------------------------------------------


@pytest.mark.parametrize('mode', ['fallback', 'transactional'])
def test_broker_down_for_10s_while_master_commits_1000_changes(
    request, stack, master, replica, consumer, audit, mode
):
    """RabbitMQ stopped >= 10 s during 1,000 commits: every change reaches the replica."""
    total = 1000
    env = settings_env(
        CQRS_OUTBOX_MODE=mode, CQRS_OUTBOX_HOLD=1, CQRS_OUTBOX_GRACE=1, CQRS_PUBLISH_RETRIES=1
    )
    c = consumer()
    proc = run_master(stack, changes_script(total), env)
    try:
        read_progress(proc, 150, 60)
        with broker_stopped():
            time.sleep(10.5)
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    relay_until_empty(master, env)
    wait_converged(master, replica)
    distinct, _ = wire_stats(audit.messages())
    lost = total - len(distinct) + differing_rows(master, replica)
    report(request, f'1. broker down 10 s ({mode})', total, [c], lost)
    assert lost == 0
    assert master_rows(master) == replica_rows(replica)


# --- 2. master killed right after commits ---------------------------------------------------

KILLED_SCRIPT = """
import os, signal
from django.db import transaction
from masterapp.models import GoldenParent as P
for pk in range(1, 101):
    P.objects.create(id=pk, name=f'{pk}-0')
objs = list(P.objects.all())
for obj in objs:
    with transaction.atomic():
        obj.name = f'{obj.pk}-1'
        obj.save()
with transaction.atomic():
    # Registered first, so it runs first at commit: the process dies right after the commit,
    # before any message of this transaction is published.
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    for obj in objs:
        obj.name = f'{obj.pk}-2'
        obj.save()
print('not reached', flush=True)
"""


def test_master_killed_right_after_commit_relay_delivers_after_restart(
    request, stack, master, replica, consumer, audit
):
    """Transactional mode: SIGKILL right after a commit loses nothing; the relay sends it."""
    env = settings_env(CQRS_OUTBOX_MODE='transactional', CQRS_OUTBOX_GRACE=1)
    c = consumer()
    proc = run_master(stack, KILLED_SCRIPT, env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert 'not reached' not in out
    assert outbox_count(master) == ROWS  # the last transaction's messages, committed with it
    wait_until(lambda: len(replica_rows(replica)) == ROWS, 60, what='first 200 changes')
    assert all(name.endswith('-1') for _, name, _ in replica_rows(replica))

    time.sleep(1.2)  # CQRS_OUTBOX_GRACE: the relay leaves younger rows to their own process
    relay_until_empty(master, env)
    wait_converged(master, replica)
    distinct, _ = wire_stats(audit.messages())
    lost = 300 - len(distinct) + differing_rows(master, replica)
    report(request, '2. master SIGKILL after commit (transactional)', 300, [c], lost)
    assert lost == 0
    assert all(name.endswith('-2') for _, name, _ in replica_rows(replica))


# --- 3. worker killed mid-stream ------------------------------------------------------------


def test_worker_killed_mid_stream_loses_nothing(request, stack, master, replica, consumer):
    """A worker SIGKILLed while it applies a stream: redelivery, 0 lost, replica converges."""
    total = 1000
    bodies = bulk_changes(stack, total // ROWS, why='queued below, in order, before any worker')
    declare_replica_queue(stack)
    publish_shuffled(stack.queue, bodies, seed=None)
    worker_env = {
        'CQRS_IT_EXTRA': json.dumps(
            {'replica': {'CQRS_BATCH_SIZE': 1}, 'consumer_prefetch_count': 20}
        )
    }
    c = consumer(workers=2, env=worker_env)
    c.wait_log('CQRS is applied', timeout=60, count=200)
    os.kill(c.worker_pids()[0], signal.SIGKILL)
    wait_converged(master, replica, timeout=120)
    # Older revisions the killed worker held come back later (redelivered): wait for all.
    c.wait_log('CQRS is applied', timeout=60, count=total)
    lost = differing_rows(master, replica)
    report(request, '3. worker SIGKILL mid-stream (2 workers)', total, [c], lost)
    assert lost == 0
    assert 'CQRS is applied' in c.log()


# --- 4. four workers, shuffled order --------------------------------------------------------

BULK_SCRIPT = """
from django.db.models import CharField, F, Value
from django.db.models.functions import Cast, Concat
from dj_cqrs.outbox import sending
from masterapp.models import GoldenParent as P
sending.send_staged = lambda *args, **kwargs: False  # {why}
P.objects.bulk_create([P(id=pk, name=f'{{pk}}-0') for pk in range(1, 101)])  # no message
for step in range(1, {steps} + 1):  # one message per row per call: revisions 1..steps
    P.cqrs.bulk_update(
        P.objects.all(), name=Concat(Cast(F('id'), CharField()), Value(f'-{{step}}'))
    )
print('done', flush=True)
"""


def bulk_changes(stack: Stack, steps: int, why: str) -> list[str]:
    """The master changes 100 rows ``steps`` times; its messages, as written to its outbox."""
    env = settings_env(CQRS_OUTBOX_MODE='transactional', CQRS_OUTBOX_GRACE=0)
    finish(run_master(stack, BULK_SCRIPT.format(steps=steps, why=why), env), timeout=300)
    return [row[0] for row in stack.master.query(f'SELECT body FROM {OUTBOX_TABLE} ORDER BY id')]


def publish_shuffled(queue: str, bodies: list[str], seed: int | None) -> None:
    """Publish ``bodies`` straight into ``queue`` in a shuffled order; wait until all are in."""
    order = bodies[:]
    if seed is not None:
        random.Random(seed).shuffle(order)
    connection = pika.BlockingConnection(pika.URLParameters(rabbit.URL))
    try:
        ch = connection.channel()
        props = pika.BasicProperties(content_type='text/plain', delivery_mode=2)
        for body in order:
            ch.basic_publish('', queue, body.encode(), props)
    finally:
        connection.close()
    wait_until(lambda: rabbit.queue_counts(queue)[0] == len(bodies), 60, what='all published')


def test_four_workers_apply_10000_shuffled_updates(request, stack, master, replica, consumer):
    """10,000 updates of 100 rows delivered in a shuffled order to 4 workers: replica == master."""
    steps = 100  # revisions 1..100 of 100 rows = 10,000 updates
    bodies = bulk_changes(stack, steps, why='messages kept to be published shuffled')
    distinct, _ = wire_stats([json.loads(body) for body in bodies])
    assert len(distinct) == ROWS * steps
    declare_replica_queue(stack)
    publish_shuffled(stack.queue, bodies, seed=11)
    c = consumer(workers=4)
    wait_converged(master, replica, timeout=180)
    lost = differing_rows(master, replica)
    report(request, '4. 4 workers, 10,000 shuffled updates', ROWS * steps, [c], lost)
    assert lost == 0
    assert {rev for _, _, rev in replica_rows(replica)} == {steps}


# --- 5. late SAVE after DELETE, late DELETE after a newer row -------------------------------

LATE_SCRIPT = """
import time
from masterapp.models import GoldenParent as P
a = P.objects.create(id=1, name='a0')
a.name = 'a1'; a.save()
a.delete()
b = P.objects.create(id=2, name='b0')
b.name = 'b1'; b.save()
b.delete()
time.sleep(0.01)
b = P.objects.create(id=2, name='b-again0')
b.name = 'b-again1'; b.save()
print('done', flush=True)
"""


def test_late_save_does_not_resurrect_and_late_delete_keeps_newer_row(
    request, stack, master, replica, consumer, audit
):
    """Late SAVEs after a DELETE do not bring row 1 back; a replayed DELETE of row 2's first
    life does not remove row 2 created again on the master."""
    declare_replica_queue(stack)  # messages wait there: nobody consumes yet
    finish(run_master(stack, LATE_SCRIPT))
    messages = audit.messages()
    assert len(messages) == 8
    rabbit.purge(stack.queue)

    def find(signal_type: str, pk: int, revision: int, nth: int = 0) -> bytes:
        found = [
            m
            for m in messages
            if (m['signal_type'], m['instance_data']['id'], m['instance_data']['cqrs_revision'])
            == (signal_type, pk, revision)
        ]
        return json.dumps(found[nth]).encode()

    order = [
        # row 1: the DELETE overtakes both SAVEs, then a SAVE comes once more
        find('DELETE', 1, 2),
        find('SAVE', 1, 1),
        find('SAVE', 1, 0),
        find('SAVE', 1, 1),
        # row 2: first life, its delete, the second life, then the first life's DELETE again
        find('SAVE', 2, 0),
        find('SAVE', 2, 1),
        find('DELETE', 2, 2),
        find('SAVE', 2, 0, nth=1),
        find('SAVE', 2, 1, nth=1),
        find('DELETE', 2, 2),
    ]
    c = consumer()
    connection = pika.BlockingConnection(pika.URLParameters(rabbit.URL))
    try:
        ch = connection.channel()
        ch.confirm_delivery()
        for body in order:
            ch.basic_publish('', stack.queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()
    c.wait_log('CQRS is applied', timeout=60, count=len(order))
    assert replica_rows(replica) == master_rows(master) == [(2, 'b-again1', 1)]
    assert 'CQRS deleted data is not restored: pk = 1' in c.log()
    assert 'CQRS delete is older than the row, the row is kept: pk = 2' in c.log()
    report(request, '5. late SAVE / late DELETE', 8, [c], differing_rows(master, replica))


# --- 6. two relays, one outbox --------------------------------------------------------------


def copy_outbox_to_postgres(master: Service, replica: Service) -> int:
    rows = master.query(
        f'SELECT created, cqrs_id, signal_type, instance_pk, routing_key, body '
        f'FROM {OUTBOX_TABLE} ORDER BY id'
    )
    with psycopg.connect(dbname=replica.db, autocommit=True, **PG) as conn, conn.cursor() as cur:
        cur.executemany(
            f'INSERT INTO {OUTBOX_TABLE} (created, cqrs_id, signal_type, instance_pk, '
            'routing_key, body, attempts, last_error, next_attempt_at) '
            "VALUES (%s, %s, %s, %s, %s, %s, 0, '', NULL)",
            rows,
        )
    return len(rows)


def test_two_relays_drain_one_outbox_of_5000(request, stack, master, replica, consumer, audit):
    """Two relays at once on one PostgreSQL outbox (SKIP LOCKED) of 5,000 messages: each is
    sent once, none is lost."""
    env = settings_env(CQRS_OUTBOX_MODE='transactional', CQRS_OUTBOX_GRACE=0)
    declare_replica_queue(stack)  # bound before anything is relayed
    bulk_changes(stack, 50, why='all kept in the outbox')
    # The master's 5,000 rows, moved to a PostgreSQL outbox (the replica service's database,
    # whose manage.py runs the relays: same transport, same exchange).
    assert copy_outbox_to_postgres(master, replica) == 5000
    source = replica
    relays = [
        subprocess.Popen(
            [PYTHON, 'manage.py', 'cqrs_outbox', 'relay', '--once', '--batch', '50'],
            cwd=source.directory,
            env=source.environ(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [relay.communicate(timeout=240) for relay in relays]
    assert [relay.returncode for relay in relays] == [0, 0], outputs
    sent = [int(out.strip().splitlines()[-1].split()[1]) for out, _ in outputs]
    assert outbox_count(source) == 0
    c = consumer()
    wait_converged(master, replica, timeout=120)
    distinct, total = wire_stats(audit.messages())
    lost = 5000 - len(distinct) + differing_rows(master, replica)
    report(request, f'6. two relays, one outbox (sent {sent[0]} + {sent[1]})', 5000, [c], lost)
    assert lost == 0
    assert total == 5000  # no message published twice
    assert sum(sent) == 5000 and all(sent)  # both relays took part
