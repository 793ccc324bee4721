"""The integration harness: two Django services run as subprocesses against a real broker.

See README.md. Nothing here imports Django: the services run in their own processes, and the
tests read their databases directly (SQLite file for the master, PostgreSQL for the replica).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
PG = {'host': '127.0.0.1', 'port': 5432, 'user': 'postgres'}
# The MariaDB/MySQL replica (``replica_db`` fixture 'mariadb'): the user .ci/services.sh creates
# in CI (MYSQL_USER/MYSQL_PASSWORD), root without a password on a developer machine.
MYSQL = {
    'host': os.environ.get('MYSQL_HOST', '127.0.0.1'),
    'port': int(os.environ.get('MYSQL_PORT', '3306')),
    'user': os.environ.get('MYSQL_USER', 'root'),
    'password': os.environ.get('MYSQL_PASSWORD', ''),
}


def mysql_connect(database: str | None = None) -> Any:
    import MySQLdb

    options = {**MYSQL, 'charset': 'utf8mb4', 'autocommit': True}
    if database:
        options['database'] = database
    return MySQLdb.connect(**options)


def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2, what: str = ''
) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what or predicate}')
        time.sleep(interval)


@dataclass
class TransportSpec:
    """How the harness drives one transport.

    ``services``: what ``tests.services.require`` must find. ``purge(queues)`` /
    ``delete(queues)`` clean the broker; ``consumers(queue)`` returns the number of consumers
    on a queue, or None when the broker cannot tell (then the harness waits for the
    worker's start log lines and a short grace period instead).
    """

    name: str
    path: str
    url: str
    services: tuple[str, ...]
    purge: Callable[[Iterable[str]], None]
    delete: Callable[[Iterable[str]], None]
    consumers: Callable[[str], int | None] = lambda queue: None
    delete_exchange: Callable[[str], None] = lambda exchange: None
    extra: dict[str, Any] = field(default_factory=dict)


def _rabbit_spec() -> TransportSpec:
    from integration_tests import rabbit

    def consumers(queue: str) -> int | None:
        counts = rabbit.queue_counts(queue)
        return 0 if counts is None else counts[1]

    return TransportSpec(
        name='rabbitmq',
        path='dj_cqrs.transport.RabbitMQTransport',
        url='amqp://guest:guest@127.0.0.1:5672/%2F',
        services=('rabbitmq',),
        purge=lambda queues: rabbit.purge(*queues),
        delete=lambda queues: rabbit.delete(*queues),
        consumers=consumers,
        delete_exchange=rabbit.delete_exchange,
    )


# Transports the fixtures know. The Kombu helper registers 'kombu_amqp' and 'kombu_redis'
# here (a factory per name, called only when a test uses that transport).
TRANSPORTS: dict[str, Callable[[], TransportSpec]] = {'rabbitmq': _rabbit_spec}


def _register_kombu() -> None:
    from integration_tests.kombu_broker import KOMBU_TRANSPORTS

    TRANSPORTS.update(KOMBU_TRANSPORTS)


_register_kombu()


@dataclass
class Service:
    """One Django project (master or replica) run through its ``manage.py``."""

    kind: str
    directory: Path
    env: dict[str, str]
    db: str
    engine: str = 'postgres'  # replica: 'postgres' or 'mariadb' (the master is SQLite)

    def environ(self, env: dict[str, str] | None = None) -> dict[str, str]:
        merged = {**os.environ, **self.env, **(env or {})}
        merged['PYTHONPATH'] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]
        )
        merged.pop('DJANGO_SETTINGS_MODULE', None)
        return merged

    def manage(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        timeout: float = 120.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run ``manage.py <args>`` and return the finished process (text stdout/stderr)."""
        proc = subprocess.run(
            [PYTHON, 'manage.py', *args],
            cwd=self.directory,
            env=self.environ(env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f'manage.py {" ".join(args)} exited {proc.returncode}\n'
                f'stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}'
            )
        return proc

    def shell(self, code: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> str:
        """Run Python code in ``manage.py shell -c``; returns stdout (fails on a non-zero exit)."""
        return self.manage(
            'shell', '-v', '0', '-c', code, env=env, timeout=timeout, check=True
        ).stdout

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of a SQL query on this service's database."""
        if self.kind == 'master':
            with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
                return conn.execute(sql, params).fetchall()
        if self.engine == 'mariadb':
            with contextlib.closing(mysql_connect(self.db)) as conn:
                cursor = conn.cursor()
                cursor.execute(sql, params or None)
                return list(cursor.fetchall()) if cursor.description is not None else []
        with psycopg.connect(dbname=self.db, autocommit=True, **PG) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def tables(self) -> list[str]:
        if self.kind == 'master':
            rows = self.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        elif self.engine == 'mariadb':
            rows = self.query(
                'SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()'
            )
        else:
            rows = self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return [r[0] for r in rows if r[0].startswith(('masterapp_', 'replicaapp_', 'dj_cqrs_'))]

    def clear(self) -> None:
        """Delete every row of the CQRS tables (between tests)."""
        tables = self.tables()
        if not tables:
            return
        if self.kind == 'master':
            with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
                for table in tables:
                    conn.execute(f'DELETE FROM "{table}"')
                conn.commit()
        elif self.engine == 'mariadb':
            with contextlib.closing(mysql_connect(self.db)) as conn:
                cursor = conn.cursor()
                cursor.execute('SET FOREIGN_KEY_CHECKS = 0')
                for table in tables:
                    cursor.execute(f'DELETE FROM `{table}`')
        else:
            self.query('TRUNCATE ' + ', '.join(f'"{t}"' for t in tables) + ' CASCADE')


class Consumer:
    """A ``manage.py cqrs_consume`` process of the replica service, its output in a file."""

    def __init__(self, replica: Service, args: list[str], log_path: Path, env: dict[str, str]):
        self.args = args
        self.log_path = log_path
        self._log_file = open(log_path, 'wb')  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [PYTHON, 'manage.py', 'cqrs_consume', *args],
            cwd=replica.directory,
            env=replica.environ(env),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_bytes().decode('utf-8', 'replace')

    def wait_log(self, text: str, timeout: float = 20.0, count: int = 1) -> str:
        """Wait until ``text`` appears ``count`` times in the log; returns the log."""
        return wait_until(
            lambda: self.log() if self.log().count(text) >= count else '',
            timeout,
            what=f'{text!r} x{count} in {self.log_path}',
        )

    def worker_pids(self) -> list[int]:
        """Pids of the worker processes the supervisor started (from its log lines)."""
        pids = []
        for line in self.log().splitlines():
            if 'Consumer process with pid' in line and line.rstrip().endswith('started'):
                pids.append(int(line.split('pid')[1].split()[0]))
        return pids

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL the process group; the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Workers left behind by a broken supervisor must not outlive the test.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log_file.close()
        return self.proc.returncode


class Stack:
    """A master service, a replica service and their queues on one transport."""

    def __init__(self, spec: TransportSpec, workdir: Path, replica_db: str = 'postgres'):
        self.spec = spec
        self.replica_db = replica_db
        token = uuid.uuid4().hex[:8]
        self.queue = f'it_{spec.name}_{token}'
        self.dead_letter_queue = f'dead_letter_{self.queue}'
        self.workdir = workdir
        self.pg_db = f'cqrs_it_{token}'
        # A private exchange: other test runs on the shared broker publish the same cqrs_ids.
        self.exchange = f'cqrs_it_{token}'
        base_env = {
            'CQRS_IT_TRANSPORT': spec.path,
            'CQRS_IT_URL': spec.url,
            'CQRS_IT_EXCHANGE': self.exchange,
        }
        self.master = Service(
            'master',
            HERE / 'master_service',
            {**base_env, 'CQRS_IT_QUEUE': f'{self.queue}_master', 'CQRS_IT_DB': ''},
            str(workdir / 'master.sqlite3'),
            'sqlite',
        )
        self.master.env['CQRS_IT_DB'] = self.master.db
        self.replica = Service(
            'replica',
            HERE / 'replica_service',
            {
                **base_env,
                'CQRS_IT_QUEUE': self.queue,
                'CQRS_IT_DB': self.pg_db,
                'CQRS_IT_DB_ENGINE': replica_db,
            },
            self.pg_db,
            replica_db,
        )
        self._consumers: list[Consumer] = []

    @property
    def queues(self) -> list[str]:
        return [self.queue, self.dead_letter_queue]

    def setup(self) -> None:
        if self.replica_db == 'mariadb':
            with contextlib.closing(mysql_connect()) as conn:
                conn.cursor().execute(f'CREATE DATABASE `{self.pg_db}` CHARACTER SET utf8mb4')
        else:
            with psycopg.connect(dbname='postgres', autocommit=True, **PG) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_db}"')
        self.master.manage('migrate', '--run-syncdb', '-v0', check=True)
        self.replica.manage('migrate', '--run-syncdb', '-v0', check=True)

    def teardown(self) -> None:
        self.stop_consumers()
        with contextlib.suppress(Exception):
            self.spec.delete(self.queues)
        with contextlib.suppress(Exception):
            self.spec.delete_exchange(self.exchange)
        if self.replica_db == 'mariadb':
            with contextlib.closing(mysql_connect()) as conn:
                conn.cursor().execute(f'DROP DATABASE IF EXISTS `{self.pg_db}`')
            return
        with psycopg.connect(dbname='postgres', autocommit=True, **PG) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')

    def reset(self) -> None:
        """Back to empty tables and queues (after each test)."""
        self.stop_consumers()
        self.spec.purge(self.queues)
        self.master.clear()
        self.replica.clear()

    def consumer(
        self,
        workers: int = 1,
        args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> Consumer:
        """Start ``cqrs_consume -w <workers> <args>``; by default wait until it consumes."""
        index = len(self._consumers) + 1
        log_path = self.workdir / f'consumer_{index}.log'
        consumer = Consumer(self.replica, ['-w', str(workers), *args], log_path, dict(env or {}))
        self._consumers.append(consumer)
        if wait:
            self.wait_consuming(consumer, workers, timeout)
        return consumer

    def wait_consuming(self, consumer: Consumer, workers: int, timeout: float = 30.0) -> None:
        """Until ``workers`` consumers are attached to the queue (or started, if unknowable)."""

        def ready() -> bool:
            if consumer.proc.poll() is not None:
                raise AssertionError(f'cqrs_consume exited early:\n{consumer.log()}')
            count = self.spec.consumers(self.queue)
            if count is None:
                return len(consumer.worker_pids()) >= workers
            return count >= workers

        wait_until(ready, timeout, what=f'{workers} consumer(s) on {self.queue}')
        if self.spec.consumers(self.queue) is None:
            time.sleep(2.0)

    def stop_consumers(self) -> None:
        while self._consumers:
            self._consumers.pop().stop()
