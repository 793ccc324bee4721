#!/usr/bin/env python
"""Throughput benchmarks of dj_cqrs against the real RabbitMQ, SQLite and PostgreSQL.

    .venv/bin/python benchmarks/run.py            # full run (the figures of README.md)
    .venv/bin/python benchmarks/run.py --quick    # small sizes, < 2 minutes (CI)

For each database backend it creates a master and a replica service (``benchmarks/project``,
fresh databases, a unique exchange and queue), runs the scenarios below as subprocesses, prints
one JSON line per scenario and a table at the end, and removes what it created:

a. ``produce``: N creates, each in its own transaction, through a CQRS model and through the
   same plain model; ``overhead_ratio`` = cqrs saves/s / plain saves/s (publisher confirms on),
   and the master process's CPU per save (``resource.getrusage``), CQRS vs plain.
b. ``consume``: a queue pre-filled with N create messages, drained by one ``cqrs_consume``
   worker, in batched mode and in one-message-per-transaction mode (``CQRS_BATCH_SIZE`` 1).
   ``workers``: the same with 1, 2 and 4 worker processes on the one queue (``-w N``).
c. ``latency``: changes at a steady 50/s on the master, time from save to replica row; then
   at 500/s and 2,000/s (creates, rows watched by a second thread).
d. ``bulk``: ``cqrs_bulk_dump`` and ``cqrs_bulk_load`` of N rows: rows/s and peak RSS.

Every scenario ends with a check that the replica equals the master (or the expected rows);
a failed check makes the exit code 1. Service logs are kept in the work directory on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROJECT = HERE / 'project'
PYTHON = sys.executable
URL = os.environ.get('BENCH_URL', 'amqp://guest:guest@127.0.0.1:5672/')
PROFILE_DIR = ''
TRACE = False
"""``--trace``: stage timestamps of the 50/s latency run (``benchmarks/project/bench_trace.py``)."""
PUBLISH_CONFIRMS = 'async'  # CQRS['master']['CQRS_PUBLISH_CONFIRMS'] of the master
REDIS_URL = os.environ.get('BENCH_REDIS_URL', 'redis://127.0.0.1:6379/13')
TRANSPORTS = {
    # name: (transport class, broker URL)
    'rabbitmq': ('dj_cqrs.transport.RabbitMQTransport', URL),
    'kombu-amqp': ('dj_cqrs.transport.KombuTransport', URL.rstrip('/') + '//'),
    'kombu-redis': ('dj_cqrs.transport.KombuTransport', REDIS_URL),
}
TABLE = {'master': 'bench_master_item', 'replica': 'bench_replica_itemreplica'}
COLUMNS = 'id, name, qty, price, note, cqrs_revision'

SIZES = {
    'quick': {
        'produce': 200,
        'repeat': 1,
        'consume': 2000,
        'consume_single': 400,
        'runs': 1,
        'latency_s': 3,
        'bulk': [1000, 5000],
    },
    'full': {
        'produce': 1000,
        'repeat': 9,  # the ratio of two ~0.3 s runs is noisy: the median of 9 pairs
        'consume': 20000,
        'consume_single': 2000,
        'runs': 3,
        'latency_s': 20,
        'bulk': [10000, 100000],
    },
}


class CheckFailed(AssertionError):
    """The replica does not hold what the master (or the scenario) says it should."""


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(interval)


# Databases -----------------------------------------------------------------------------------


class Database:
    """One service database (SQLite file, PostgreSQL or MariaDB database) the harness owns."""

    def __init__(self, backend: str, role: str, workdir: Path, suffix: str) -> None:
        self.backend, self.role = backend, role
        if backend in ('postgres', 'mariadb'):
            self.name = f'cqrs_bench_{role}_{suffix}'
        else:
            self.name = str(workdir / f'{role}.sqlite3')

    def create(self) -> None:
        if self.backend == 'postgres':
            self._pg_admin(f'CREATE DATABASE {self.name}')
        elif self.backend == 'mariadb':
            self._execute(f'CREATE DATABASE {self.name} CHARACTER SET utf8mb4', database=None)

    def drop(self) -> None:
        if self.backend == 'postgres':
            self._pg_admin(f'DROP DATABASE IF EXISTS {self.name} WITH (FORCE)')
        elif self.backend == 'mariadb':
            self._execute(f'DROP DATABASE IF EXISTS {self.name}', database=None)
        else:
            # The next transport's services start on an empty file too (a full run with several
            # transports reuses the work directory: the bulk scenario's rows stayed behind).
            for suffix in ('', '-wal', '-shm'):
                Path(self.name + suffix).unlink(missing_ok=True)

    @staticmethod
    def _pg_admin(sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host='127.0.0.1', user='postgres', dbname='postgres', autocommit=True
        ) as conn:
            conn.execute(sql)

    def _execute(self, sql: str, database: str | None = '') -> list[tuple]:
        """Run ``sql`` on this database (or none: ``database=None``); the rows it returns."""
        if self.backend == 'mariadb':
            conn = mysql_connect(self.name if database == '' else database)
            try:
                cursor = conn.cursor()
                cursor.execute(sql)
                return list(cursor.fetchall()) if cursor.description is not None else []
            finally:
                conn.close()
        if self.backend == 'postgres':
            import psycopg

            with psycopg.connect(host='127.0.0.1', user='postgres', dbname=self.name) as conn:
                cursor = conn.execute(sql)
                return cursor.fetchall() if cursor.description is not None else []
        import sqlite3

        conn = sqlite3.connect(self.name, timeout=20)
        try:
            with conn:
                return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def rows(self, order: bool = True) -> list[tuple]:
        sql = f'SELECT {COLUMNS} FROM {TABLE[self.role]}' + (' ORDER BY id' if order else '')
        return [_normal(r) for r in self._execute(sql)]

    def count(self) -> int:
        return self._execute(f'SELECT count(*) FROM {TABLE[self.role]}')[0][0]

    def clear(self) -> None:
        self._execute(f'DELETE FROM {TABLE[self.role]}')


def mysql_connect(database: str | None) -> Any:
    """A mysqlclient connection (autocommit) as the services' settings make it."""
    import MySQLdb

    options: dict[str, Any] = {
        'host': os.environ.get('MYSQL_HOST', '127.0.0.1'),
        'port': int(os.environ.get('MYSQL_PORT', '3306')),
        'user': os.environ.get('MYSQL_USER', 'root'),
        'password': os.environ.get('MYSQL_PASSWORD', ''),
        'charset': 'utf8mb4',
        'autocommit': True,
    }
    if database:
        options['database'] = database
    return MySQLdb.connect(**options)


def _normal(row: tuple) -> tuple:
    from decimal import Decimal

    # SQLite keeps decimals as REAL: compare prices to the cent on both sides.
    return tuple(
        Decimal(str(v)).quantize(Decimal('0.01')) if i == 3 else v for i, v in enumerate(row)
    )


# Broker --------------------------------------------------------------------------------------


class Broker:
    """The run's own exchange and queues on the real RabbitMQ (deleted at the end)."""

    transport, url = TRANSPORTS['rabbitmq']

    def __init__(self, suffix: str) -> None:
        self.exchange = f'cqrs_bench_{suffix}'
        self.queue = f'bench_{suffix}'
        self.dead = f'dead_letter_{self.queue}'
        self.conn: Any = None
        self.channel: Any = None
        self._reopen()

    def _reopen(self) -> None:
        if self.conn is not None and self.conn.is_open:
            try:
                self.conn.close()
            except Exception:
                pass
        # No heartbeats: the harness leaves this connection idle while a service works.
        params = pika.URLParameters(URL)
        params.heartbeat = 0
        # Other jobs on this machine may restart the broker: wait for it (bounded).
        self.conn = wait_until(lambda: _connect(params), 120, 1.0, 'RabbitMQ')
        self.channel = self.conn.channel()

    def _retrying(self, operation: Callable[[], Any]) -> Any:
        """``operation()``, once more on a fresh connection if the first one was lost."""
        try:
            return operation()
        except (pika.exceptions.AMQPError, OSError):
            self._reopen()
            return operation()

    def declare(self) -> None:
        self._retrying(self._declare)

    def _declare(self) -> None:
        ch = self.channel
        ch.exchange_declare(self.exchange, exchange_type='topic', durable=True)
        for name in (self.queue, self.dead):
            ch.queue_declare(name, durable=True)
        ch.queue_bind(self.queue, self.exchange, routing_key='bench_item')
        ch.queue_bind(self.queue, self.exchange, routing_key=f'cqrs.{self.queue}.bench_item')
        ch.queue_bind(self.dead, self.exchange, routing_key=f'cqrs.{self.dead}.bench_item')

    def state(self) -> tuple[int, int]:
        """(ready messages, consumers) of the service queue."""
        method = self._retrying(lambda: self.channel.queue_declare(self.queue, passive=True)).method
        return method.message_count, method.consumer_count

    filled = 0
    """Messages a scenario pre-filled the queue with (for brokers that count no consumers)."""

    def purge(self) -> None:
        self._retrying(lambda: self.channel.queue_purge(self.queue))

    def delete(self) -> None:
        for name in (self.queue, self.dead):
            self._retrying(lambda name=name: self.channel.queue_delete(name))
        self._retrying(lambda: self.channel.exchange_delete(self.exchange))
        self.conn.close()


class KombuBroker(Broker):
    """The same exchange and queues through Kombu (``--transports kombu-amqp,kombu-redis``).

    Over AMQP the RabbitMQ helper above counts messages and consumers; over Redis the queue is
    a list (``LLEN``) and Redis keeps no consumers: a worker counts as attached once it has
    taken the first message of the pre-filled queue, or while it waits in ``BRPOP``.
    """

    def __init__(self, suffix: str, name: str) -> None:
        self.transport, self.url = TRANSPORTS[name]
        self.redis = self.url.startswith('redis')
        self.filled = 0
        if self.redis:
            self.exchange = f'cqrs_bench_{suffix}'
            self.queue = f'bench_{suffix}'
            self.dead = f'dead_letter_{self.queue}'
        else:
            super().__init__(suffix)

    def _kombu(self, operation: Callable[[Any, Any], Any]) -> Any:
        import kombu

        with kombu.Connection(self.url) as connection:
            channel = connection.channel()
            exchange = kombu.Exchange(self.exchange, type='topic', durable=True)
            return operation(channel, exchange)

    def _declare(self) -> None:
        if not self.redis:
            return super()._declare()
        import kombu

        def declare(channel: Any, exchange: Any) -> None:
            keys = {self.queue: ['bench_item', f'cqrs.{self.queue}.bench_item']}
            keys[self.dead] = [f'cqrs.{self.dead}.bench_item']
            for name, routing_keys in keys.items():
                bindings = [kombu.binding(exchange, routing_key=k) for k in routing_keys]
                kombu.Queue(name, bindings=bindings, durable=True)(channel).declare()

        self._kombu(declare)

    def state(self) -> tuple[int, int]:
        if not self.redis:
            return super().state()

        def look(channel: Any, exchange: Any) -> tuple[int, int]:
            ready = channel.client.llen(self.queue)  # an empty queue is no key at all
            # Clients of this database blocked in BRPOP: idle workers.
            db = str(channel.connection.client.virtual_host or 0)
            clients = channel.client.client_list()
            waiting = sum(1 for c in clients if c.get('cmd') == 'brpop' and c.get('db') == db)
            return ready, waiting

        ready, waiting = self._kombu(look)
        taking = 0 < self.filled and ready < self.filled
        return ready, max(waiting, int(taking))

    def purge(self) -> None:
        if not self.redis:
            return super().purge()
        import kombu

        self.filled = 0
        self._kombu(lambda ch, ex: kombu.Queue(self.queue, no_declare=True)(ch).purge())

    def delete(self) -> None:
        if not self.redis:
            return super().delete()
        import kombu

        for name in (self.queue, self.dead):
            self._kombu(lambda ch, ex, name=name: kombu.Queue(name, no_declare=True)(ch).delete())
        self._kombu(lambda ch, ex: ex(ch).delete())


def _connect(params: pika.ConnectionParameters) -> Any:
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.AMQPConnectionError:
        return None


# Services ------------------------------------------------------------------------------------


class Services:
    """Runs commands of the benchmark master/replica services with the right environment."""

    def __init__(self, backend: str, broker: Broker, workdir: Path, suffix: str) -> None:
        self.backend, self.broker, self.workdir = backend, broker, workdir
        self.db = {role: Database(backend, role, workdir, suffix) for role in ('master', 'replica')}
        self.logs: list[Path] = []
        self.profilers: list[subprocess.Popen] = []

    def env(self, role: str, replica: dict | None = None) -> dict[str, str]:
        extra: dict[str, Any] = {'exchange': self.broker.exchange}
        if role == 'master':
            extra['master'] = {'CQRS_PUBLISH_CONFIRMS': PUBLISH_CONFIRMS}
        if replica:
            extra['replica'] = replica
        env = dict(os.environ)
        env.update(
            BENCH_ROLE=role,
            BENCH_DB=self.backend,
            BENCH_DB_NAME=self.db[role].name,
            BENCH_QUEUE=self.broker.queue if role == 'replica' else 'bench_master',
            BENCH_EXTRA=json.dumps(extra),
            BENCH_URL=self.broker.url,
            BENCH_TRANSPORT=self.broker.transport,
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')]),
        )
        return env

    def log(self, name: str) -> Any:
        path = self.workdir / f'{self.backend}-{name}-{len(self.logs)}.log'
        self.logs.append(path)
        return open(path, 'w')

    def manage(self, role: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        with self.log(f'{role}-{args[0]}') as err:
            result = subprocess.run(
                [PYTHON, str(PROJECT / 'manage.py'), *args],
                env=self.env(role),
                stdout=subprocess.PIPE,
                stderr=err,
                timeout=timeout,
                text=True,
            )
        if result.returncode:
            raise RuntimeError(f'manage.py {" ".join(args)} ({role}) exited {result.returncode}')
        return result

    def task(
        self, role: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> dict:
        with self.log(f'{role}-{args[0]}') as err:
            result = subprocess.run(
                [PYTHON, str(PROJECT / 'bench_tasks.py'), *args],
                env={**self.env(role), **(env or {})},
                stdout=subprocess.PIPE,
                stderr=err,
                timeout=timeout,
                text=True,
            )
        if result.returncode:
            raise RuntimeError(f'bench_tasks.py {" ".join(args)} exited {result.returncode}')
        return json.loads(result.stdout.strip().splitlines()[-1])

    def start_worker(
        self, replica: dict | None = None, profile: str = '', workers: int = 1
    ) -> subprocess.Popen:
        err = self.log('worker')
        worker = subprocess.Popen(
            [
                PYTHON,
                str(PROJECT / 'manage.py'),
                'cqrs_consume',
                '--sigint-timeout',
                '10',
                '-w',
                str(workers),
            ],  # fmt: skip
            env=self.env('replica', replica),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        if PROFILE_DIR and profile:
            self.profile(worker.pid, profile)
        return worker

    def profile(self, pid: int, name: str) -> None:
        """Sample ``pid`` and its children with py-spy until they exit (``--profile DIR``)."""
        spy = shutil.which('py-spy') or str(Path(PYTHON).parent / 'py-spy')
        out = Path(PROFILE_DIR) / f'{self.backend}-{name}.txt'
        self.profilers.append(
            subprocess.Popen(
                [
                    spy,
                    'record',
                    '--pid',
                    str(pid),
                    '--subprocesses',
                    '--format',
                    'raw',
                    '--output',
                    str(out),
                    '--rate',
                    '200',
                    '--nonblocking',
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def stop_worker(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self.broker.filled = 0
        wait_until(lambda: self.broker.state()[1] == 0, 20, 0.1, 'the worker to leave the queue')

    def setup(self) -> None:
        for role, db in self.db.items():
            db.create()
            self.manage(role, 'migrate', '--run-syncdb', '-v', '0')

    def teardown(self) -> None:
        for db in self.db.values():
            db.drop()


# Scenarios -----------------------------------------------------------------------------------


def scenario_produce(svc: Services, size: dict) -> dict:
    svc.broker.purge()
    result = svc.task(
        'master', 'produce', '--n', str(size['produce']), '--repeat', str(size['repeat'])
    )
    queued = wait_until(
        lambda: svc.broker.state()[0] >= result['messages'] or None, 20, 0.1, 'messages queued'
    )
    if svc.broker.state()[0] != result['messages']:
        raise CheckFailed(f'{queued} messages queued for {result["messages"]} saves')
    svc.broker.purge()
    result['check'] = 'every save published once'
    # The floor: the same runs with a transport that publishes nothing (TransportMock), i.e.
    # what the CQRS model itself costs (revision and timestamp columns, the message built).
    floor = svc.task(
        'master',
        'produce',
        '--n',
        str(size['produce']),
        '--repeat',
        str(size['repeat']),
        env={'BENCH_TRANSPORT': 'dj_cqrs.transport.mock.TransportMock'},
    )
    result['no_broker_ratio'] = floor['overhead_ratio']
    return result


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live descendants."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / 'stat').read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        parent[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, total = {pid}, 0
    for _ in range(4):  # the command, its workers' supervisor, the workers
        tree |= {child for child, ppid in parent.items() if ppid in tree}
    for member in tree:
        total += ticks.get(member, 0)
    return total / os.sysconf('SC_CLK_TCK')


WORKER_CPU: list[float] = []
"""Worker CPU µs per message of each ``_drain`` run (a figure a busy machine disturbs less
than wall-clock messages/s: read it beside them when two commits are compared)."""


def _drain(svc: Services, n: int, replica: dict, name: str, workers: int = 1) -> float:
    """Messages/s of ``workers`` worker processes draining a queue pre-filled with ``n``
    creates, from the moment they are all attached to the queue; the workers' CPU per message
    over the same span goes to ``WORKER_CPU``."""
    for attempt in range(3):
        svc.db['replica'].clear()
        svc.broker.purge()
        try:
            svc.task('replica', 'prefill', '--n', str(n), '--exchange', svc.broker.exchange)
            wait_until(lambda: svc.broker.state()[0] >= n, 60, 0.05, 'the queue to fill')
            svc.broker.filled = n
            break
        except (RuntimeError, TimeoutError):
            # Another job on this machine restarted the broker while we filled the queue.
            if attempt == 2:
                raise
            svc.broker.declare()
    worker = svc.start_worker(replica, profile=name, workers=workers)
    try:
        wait_until(lambda: svc.broker.state()[1] >= workers, 60, 0.002, 'the workers to consume')
        began, cpu_began = time.perf_counter(), _tree_cpu(worker.pid)
        wait_until(lambda: svc.db['replica'].count() >= n, 600, 0.01, 'the replica rows')
        elapsed = time.perf_counter() - began
        WORKER_CPU.append((_tree_cpu(worker.pid) - cpu_began) / n * 1e6)
    finally:
        svc.stop_worker(worker)
    rows = svc.db['replica'].rows()
    if len(rows) != n or rows[-1][0] != n or any(r[5] != 0 for r in rows):
        raise CheckFailed(f'replica holds {len(rows)} rows after {n} creates')
    return n / elapsed


def scenario_consume(svc: Services, size: dict) -> dict:
    batched, single, batched_cpu, single_cpu = [], [], [], []
    for _ in range(size['runs']):
        batched.append(_drain(svc, size['consume'], {}, 'consume-batched'))
        batched_cpu.append(WORKER_CPU[-1])
        single.append(_drain(svc, size['consume_single'], {'CQRS_BATCH_SIZE': 1}, 'consume-single'))
        single_cpu.append(WORKER_CPU[-1])
    result = {
        'batched_worker_cpu_us_per_msg': statistics.median(batched_cpu),
        'single_worker_cpu_us_per_msg': statistics.median(single_cpu),
        'batched_msgs_per_s': statistics.median(batched),
        'single_msgs_per_s': statistics.median(single),
        'batched_runs': batched,
        'single_runs': single,
        'n_batched': size['consume'],
        'n_single': size['consume_single'],
    }
    result['speedup'] = result['batched_msgs_per_s'] / result['single_msgs_per_s']
    result['check'] = 'replica rows equal the messages'
    return result


WORKER_COUNTS = (1, 2, 4)


def scenario_workers(svc: Services, size: dict) -> dict:
    """Consume throughput with 1, 2 and 4 workers (``cqrs_consume -w N``) on one queue."""
    result: dict[str, Any] = {}
    for workers in WORKER_COUNTS:
        batched, single = [], []
        for _ in range(size['runs']):
            name = f'workers{workers}'
            batched.append(_drain(svc, size['consume'], {}, f'{name}-batched', workers))
            single.append(
                _drain(
                    svc, size['consume_single'], {'CQRS_BATCH_SIZE': 1}, f'{name}-single', workers
                )  # fmt: skip
            )
        result[str(workers)] = {
            'batched_msgs_per_s': statistics.median(batched),
            'single_msgs_per_s': statistics.median(single),
            'batched_runs': batched,
            'single_runs': single,
        }
    result['n_batched'] = size['consume']
    result['n_single'] = size['consume_single']
    result['check'] = 'replica rows equal the messages'
    return result


LATENCY_RATES = (50, 500, 2000)
"""Changes/s of the latency scenario: at 50/s each change waits for its replica row; above,
changes are made at the rate and a second thread notes when each row appears."""


def scenario_latency(svc: Services, size: dict) -> dict:
    result: dict[str, Any] = {}
    for rate in LATENCY_RATES:
        svc.broker.purge()
        svc.db['replica'].clear()
        trace_dir = svc.workdir / f'trace-{svc.backend}' if TRACE and rate == 50 else None
        if trace_dir is not None:
            trace_dir.mkdir(exist_ok=True)
            os.environ['BENCH_TRACE'] = str(trace_dir)
        worker = svc.start_worker()
        try:
            wait_until(lambda: svc.broker.state()[1] >= 1, 60, 0.01, 'the worker to consume')
            seconds = size['latency_s'] if rate == 50 else max(2, size['latency_s'] // 4)
            run = svc.task(
                'master',
                'latency',
                '--rate',
                str(rate),
                '--seconds',
                str(seconds),
                '--replica-db',
                svc.db['replica'].name,
                '--backend',
                svc.backend,
            )
            wait_until(lambda: svc.broker.state()[0] == 0, 30, 0.05, 'the queue to drain')
            time.sleep(0.5)
        finally:
            svc.stop_worker(worker)
            os.environ.pop('BENCH_TRACE', None)
        _check_equal(svc, ids_from_master=True)
        if trace_dir is not None:
            run['stages_ms'] = trace_stages(trace_dir)
        if rate == 50:
            result.update(run)  # the headline figures, as before
        result[f'at_{rate}'] = run
        svc.db['master'].clear()
    result['check'] = 'replica equals master'
    return result


TRACE_STAGES = (
    ('save', 'save_start', 'save_end'),
    ('to publisher', 'save_end', 'drain_start'),
    ('publish call', 'drain_start', 'drained'),
    ('broker to worker', 'drained', 'arrived'),
    ('worker to batch', 'arrived', 'decide'),
    ('batch to transaction', 'decide', 'apply_start'),
    ('replica transaction', 'apply_start', 'applied'),
    ('to seen', 'applied', 'seen'),
    ('total', 'save_start', 'seen'),
    ('confirm after publish', 'drained', 'confirmed'),
)
"""(name, from, to): the stages ``--trace`` reports, as medians over the changes."""


def trace_stages(folder: Path) -> dict[str, float]:
    """Median milliseconds of each stage over the changes every stage was seen for."""
    changes: dict[tuple, dict[str, float]] = {}
    for path in folder.glob('*.json'):
        for stage, pk, revision, at in json.loads(path.read_text() or '[]'):
            changes.setdefault((pk, revision), {}).setdefault(stage, at)
    stages = {}
    for name, start, end in TRACE_STAGES:
        spans = [c[end] - c[start] for c in changes.values() if start in c and end in c]
        if spans:
            stages[name] = round(statistics.median(spans) * 1000, 3)
    return stages


def _check_equal(svc: Services, ids_from_master: bool = False) -> None:
    master, replica = svc.db['master'].rows(), svc.db['replica'].rows()
    if ids_from_master:
        # The produce scenario left master rows that were purged from the queue on purpose.
        ids = {r[0] for r in replica}
        master = [r for r in master if r[0] in ids]
    if master != replica or not replica:
        raise CheckFailed(f'replica ({len(replica)} rows) differs from master ({len(master)})')


def _timed_command(svc: Services, role: str, args: list[str]) -> tuple[float, int, float]:
    """(wall seconds, peak RSS in MiB, CPU seconds) of one manage.py command."""
    with svc.log(f'{role}-{args[0]}') as err:
        began = time.perf_counter()
        process = subprocess.Popen(
            [PYTHON, str(PROJECT / 'manage.py'), *args],
            env=svc.env(role),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f'manage.py {" ".join(args)} exited {process.returncode}')
    return elapsed, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def scenario_bulk(svc: Services, size: dict) -> dict:
    result: dict[str, Any] = {}
    for n in size['bulk']:
        svc.task('master', 'populate', '--n', str(n))
        dump = svc.workdir / f'bulk-{n}.dump'
        dump_s, dump_rss, dump_cpu = _timed_command(
            svc, 'master', ['cqrs_bulk_dump', '--cqrs-id', 'bench_item', '-o', str(dump), '-f']
        )
        svc.db['replica'].clear()
        load_s, load_rss, load_cpu = _timed_command(
            svc, 'replica', ['cqrs_bulk_load', '-i', str(dump)]
        )
        _check_equal(svc)
        dump.unlink()
        result[str(n)] = {
            'dump_rows_per_s': n / dump_s,
            'load_rows_per_s': n / load_s,
            'dump_peak_rss_mib': dump_rss,
            'load_peak_rss_mib': load_rss,
            # Rows per CPU second of the command (start-up included): robust to a busy machine.
            'dump_rows_per_cpu_s': n / dump_cpu,
            'load_rows_per_cpu_s': n / load_cpu,
        }
    largest = result[str(size['bulk'][-1])]
    result.update({k: largest[k] for k in largest})
    result['rows'] = size['bulk'][-1]
    result['check'] = 'replica equals master'
    return result


SCENARIOS = {
    'produce': scenario_produce,
    'consume': scenario_consume,
    'workers': scenario_workers,
    'latency': scenario_latency,
    'bulk': scenario_bulk,
}


# Report --------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:,.{digits}f}'
    return f'{value:,}' if isinstance(value, int) else str(value)


def table(results: list[dict]) -> str:
    lines = [
        '| backend | scenario | result | target | met |',
        '|---|---|---|---|---|',
    ]
    for r in results:
        b, s, v = r['backend'], r['scenario'], r.get('result') or {}
        if r.get('transport', 'rabbitmq') != 'rabbitmq':
            b = f'{b}, {r["transport"]}'

        if 'error' in r:
            lines.append(f'| {b} | {s} | ERROR: {r["error"]} | | no |')
            continue
        if s == 'produce':
            lines.append(
                f'| {b} | produce | ratio {_fmt(v["overhead_ratio"], 2)} '
                f'({_fmt(v["cqrs_saves_per_s"])} vs {_fmt(v["plain_saves_per_s"])} saves/s; '
                f'until the last confirm {_fmt(v.get("sustained_ratio"), 2)}; '
                f'same model, no broker {_fmt(v.get("no_broker_ratio"), 2)}) '
                f'| >= 0.8 | {_yes(v["overhead_ratio"] >= 0.8)} |'
            )
            added = v.get('added_cpu_us_per_save')
            if added is not None:
                lines.append(
                    f'| {b} | master CPU per save | CQRS {_fmt(v["cqrs_cpu_us_per_save"])} µs, '
                    f'plain {_fmt(v["plain_cpu_us_per_save"])} µs: +{_fmt(added)} µs '
                    f'| <= +25 µs | {_yes(added <= 25)} |'
                )
        elif s == 'consume':
            met = v['speedup'] >= 5 and (b != 'sqlite' or v['batched_msgs_per_s'] >= 5000)
            lines.append(
                f'| {b} | consume | batched {_fmt(v["batched_msgs_per_s"])} msg/s, one-by-one '
                f'{_fmt(v["single_msgs_per_s"])} msg/s (x{_fmt(v["speedup"], 1)}) '
                f'| >= 5,000 (SQLite), >= 5x | '
                f'{_yes(met)} |'
            )
            if 'batched_worker_cpu_us_per_msg' in v:
                lines.append(
                    f'| {b} | worker CPU per message | batched '
                    f'{_fmt(v["batched_worker_cpu_us_per_msg"])} µs, one-by-one '
                    f'{_fmt(v["single_worker_cpu_us_per_msg"])} µs | (no target) | - |'
                )
        elif s == 'workers':
            counts = [k for k in v if k.isdigit()]
            batched = ', '.join(f'{k}: {_fmt(v[k]["batched_msgs_per_s"])}' for k in counts)
            single = ', '.join(f'{k}: {_fmt(v[k]["single_msgs_per_s"])}' for k in counts)
            lines.append(
                f'| {b} | consume by 1/2/4 workers | batched {batched} msg/s; one-by-one '
                f'{single} msg/s | (reported) | - |'
            )
        elif s == 'latency':
            met = (
                v['p50_ms'] is not None
                and v['p50_ms'] <= 1.5
                and v['p99_ms'] <= 3
                and not v['missed']
            )
            lines.append(
                f'| {b} | latency @50/s | p50 {_fmt(v["p50_ms"], 1)} ms, p95 {_fmt(v["p95_ms"], 1)}'
                f' ms, p99 {_fmt(v["p99_ms"], 1)} ms (missed {v["missed"]}; save() itself p50 '
                f'{_fmt(v.get("save_p50_ms"), 1)} ms) | p50 <= 1.5 ms, p99 <= 3 ms | '
                f'{_yes(met)} |'
            )
            if v.get('stages_ms'):
                parts = ', '.join(f'{k} {x:.2f}' for k, x in v['stages_ms'].items())
                lines.append(f'| {b} | latency @50/s stages (p50 ms) | {parts} | reported | - |')
            for rate in LATENCY_RATES[1:]:
                at = v.get(f'at_{rate}')
                if at:
                    lines.append(
                        f'| {b} | latency @{rate:,}/s | p50 {_fmt(at["p50_ms"], 1)} ms, p99 '
                        f'{_fmt(at["p99_ms"], 1)} ms (achieved {_fmt(at["achieved_rate"])}/s, '
                        f'missed {at["missed"]}) | reported | - |'
                    )
        elif s == 'bulk':
            sizes = [k for k in v if k.isdigit()]
            rss = ', '.join(
                f'{int(k):,}: dump {v[k]["dump_peak_rss_mib"]} / load {v[k]["load_peak_rss_mib"]}'
                for k in sizes
            )
            lines.append(
                f'| {b} | bulk {v["rows"]:,} rows | dump {_fmt(v["dump_rows_per_s"])} rows/s, load '
                f'{_fmt(v["load_rows_per_s"])} rows/s (per CPU s: dump '
                f'{_fmt(v["dump_rows_per_cpu_s"])}, load {_fmt(v["load_rows_per_cpu_s"])}); '
                f'peak RSS MiB ({rss}) '
                f'| dump >= 60,000, load >= 25,000 | '
                f'{_yes(v["dump_rows_per_s"] >= 60000 and v["load_rows_per_s"] >= 25000)} |'
            )
    return '\n'.join(lines)


def _yes(flag: bool) -> str:
    return 'yes' if flag else 'no'


def machine() -> str:
    cpu = 'unknown CPU'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    mem = ''
    try:
        kb = int(Path('/proc/meminfo').read_text().split()[1])
        mem = f', {kb / 1024 / 1024:.1f} GiB RAM'
    except (OSError, ValueError, IndexError):
        pass
    return f'{os.cpu_count()} CPUs ({cpu}){mem}, Python {sys.version.split()[0]}'


def _run_transport(
    args: Any,
    size: dict,
    suffix: str,
    workdir: Path,
    broker: Broker,
    transport: str,
    results: list[dict],
) -> bool:
    """Every backend and scenario over one transport; True if a scenario failed."""
    failed = False
    try:
        broker.declare()
        for backend in args.backends.split(','):
            svc = Services(backend, broker, workdir, suffix)
            try:
                svc.setup()
                for name in args.scenarios.split(','):
                    began = time.perf_counter()
                    entry: dict[str, Any] = {
                        'backend': backend,
                        'transport': transport,
                        'scenario': name,
                    }
                    load_before = os.getloadavg()[0]
                    try:
                        entry['result'] = SCENARIOS[name](svc, size)
                    except Exception as err:  # report and go on with the next scenario
                        entry['error'] = f'{type(err).__name__}: {err}'
                        failed = True
                    entry['seconds'] = round(time.perf_counter() - began, 1)
                    # A busy machine slows every figure: keep its load beside them.
                    entry['load_avg_1m'] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                    results.append(entry)
                    print(json.dumps(entry), flush=True)
            finally:
                svc.teardown()
    finally:
        broker.delete()
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes for CI (< 2 minutes)')
    parser.add_argument('--backends', default='sqlite,postgres,mariadb')
    # 'workers' (1/2/4 worker processes) is asked for by name: it triples the consume runs.
    parser.add_argument(
        '--scenarios', default=','.join(name for name in SCENARIOS if name != 'workers')
    )
    parser.add_argument(
        '--transports',
        default='rabbitmq',
        help=f'comma-separated, among {", ".join(TRANSPORTS)} (one table for all)',
    )
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    parser.add_argument(
        '--trace',
        action='store_true',
        help='stage timestamps of the 50/s latency run: where a change\'s milliseconds go',
    )
    parser.add_argument(
        '--profile', default='', metavar='DIR', help='py-spy profiles of the workers into DIR'
    )
    parser.add_argument(
        '--publish-confirms',
        default='async',
        choices=['sync', 'async'],
        help="the master's CQRS_PUBLISH_CONFIRMS (default async, the library's default)",
    )
    args = parser.parse_args(argv)
    global PROFILE_DIR, PUBLISH_CONFIRMS, TRACE
    PROFILE_DIR = args.profile
    TRACE = args.trace
    PUBLISH_CONFIRMS = args.publish_confirms
    if PROFILE_DIR:
        Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
    size = SIZES['quick' if args.quick else 'full']
    suffix = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix='cqrs-bench-'))
    results: list[dict] = []
    failed = False
    print(f'# machine: {machine()}', flush=True)
    print(f'# mode: {"quick" if args.quick else "full"}, work directory {workdir}', flush=True)
    print(f'# publish confirms: {PUBLISH_CONFIRMS}', flush=True)
    for transport in args.transports.split(','):
        print(f'# transport: {transport} ({TRANSPORTS[transport][1]})', flush=True)
        if transport == 'rabbitmq':
            broker: Broker = Broker(suffix)
        else:
            broker = KombuBroker(suffix, transport)
        failed = _run_transport(args, size, suffix, workdir, broker, transport, results) or failed
    if args.keep or failed:
        print(f'# logs kept in {workdir}', flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
