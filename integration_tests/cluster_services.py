"""One master and several replica services on the test cluster (``cluster.RabbitCluster``).

The services are the integration projects (``master_service/``, ``replica_service/``) run as
subprocesses through :class:`harness.Service` and :class:`harness.Consumer`, with a URL list
of the cluster's nodes instead of the default broker. The master is driven by
:data:`DRIVER`, a ``manage.py shell`` script that saves rows at a steady rate and counts the
confirms it gets (``message_published``), so a test can stop, kill or pause nodes while it
runs and then compare every replica with the master.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from integration_tests.cluster import Node, RabbitCluster
from integration_tests.harness import HERE, PG, PYTHON, Consumer, Service, wait_until

N = 600
"""Messages the master publishes in a scenario (one new row each)."""
RATE = 40.0
"""... at this steady rate per second."""
MASTER_TABLE = 'masterapp_goldenparent'
REPLICA_TABLE = 'replicaapp_goldenparentreplica'

# Saves CL_N rows of golden_parent (ids CL_FIRST.., names 'v<i>') at CL_RATE per second; with
# CL_ROWS > 0 it cycles over CL_ROWS rows instead, so each is updated many times. Writes
# the count saved so far to CL_PROGRESS and, at the end, a JSON summary to CL_RESULT.
DRIVER = r"""
import json, os, threading, time
from dj_cqrs import signals
from dj_cqrs.transport import async_publisher
from masterapp.models import GoldenParent

n, rate = int(os.environ['CL_N']), float(os.environ['CL_RATE'])
rows, first = int(os.environ.get('CL_ROWS') or 0), int(os.environ.get('CL_FIRST') or 1)
lock = threading.Lock()
counts = {'published': 0, 'confirmed': 0, 'failed': 0, 'kept': 0, 'errors': 0}
confirm_times = []

def on_published(sender, **kwargs):
    with lock:
        counts['confirmed'] += 1
        confirm_times.append(time.monotonic())

def on_failed(sender, kept=False, **kwargs):
    with lock:
        counts['failed'] += 1
        counts['kept'] += bool(kept)

signals.message_published.connect(on_published, weak=False)
signals.message_publish_failed.connect(on_failed, weak=False)
started = time.monotonic()
for i in range(n):
    pk = first + (i % rows if rows else i)
    try:
        if not rows or i < rows:
            GoldenParent.objects.create(id=pk, name=f'v{i}')
        else:
            row = GoldenParent.objects.get(id=pk)
            row.name = f'v{i}'
            row.save()
    except Exception as err:
        counts['errors'] += 1
        print('save failed:', type(err).__name__, err, flush=True)
    counts['published'] += 1
    with open(os.environ['CL_PROGRESS'], 'w') as f:
        f.write(str(i + 1))
    pause = started + (i + 1) / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)
flushed = async_publisher.flush(60)
gaps = [b - a for a, b in zip(confirm_times, confirm_times[1:])]
with lock:
    summary = dict(counts, flushed=flushed, seconds=time.monotonic() - started,
                   max_confirm_gap=max(gaps, default=0.0))
with open(os.environ['CL_RESULT'], 'w') as f:
    json.dump(summary, f)
"""


@dataclass
class Driver:
    """A running :data:`DRIVER` process."""

    process: subprocess.Popen
    progress_path: Path
    result_path: Path
    log_path: Path

    def progress(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return int(self.progress_path.read_text() or 0)
        return 0

    def wait_progress(self, count: int, timeout: float = 60.0) -> None:
        wait_until(lambda: self.progress() >= count or self._check(), timeout,
                   what=f'the master to save {count} rows')  # fmt: skip

    def _check(self) -> bool:
        if self.process.poll() is not None and self.process.returncode != 0:
            raise AssertionError(f'the master driver failed:\n{self.log_path.read_text()}')
        return False

    def result(self, timeout: float = 180.0) -> dict[str, Any]:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f'the master driver hung:\n{self.log_path.read_text()}')
        if self.process.returncode != 0:
            raise AssertionError(f'the master driver failed:\n{self.log_path.read_text()}')
        return json.loads(self.result_path.read_text())


class ClusterServices:
    """A master and ``replicas`` replica services (a queue and a database each) on a cluster.

    ``orders``: per service (master first), the order of the cluster's nodes in its URL list,
    so that the services do not all start on the same node. ``queue_type``: ``CQRS['queue_type']``
    of every service. ``transport``: ``CQRS['transport']`` class path.
    """

    def __init__(
        self,
        cluster: RabbitCluster,
        workdir: Path,
        replicas: int = 2,
        queue_type: str = 'quorum',
        transport: str = 'dj_cqrs.transport.RabbitMQTransport',
        orders: Sequence[Sequence[int]] = ((2, 0, 1), (0, 1, 2), (1, 2, 0)),
        url_query: str = '?heartbeat=5',
        separator: str = ';',
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        self.exchange = f'cqrs_cl_{token}'
        extra = json.dumps({'queue_type': queue_type})

        def env(order: Sequence[int], queue: str, db: str) -> dict[str, str]:
            urls = separator.join(cluster.nodes[i].url + url_query for i in order)
            return {
                'CQRS_IT_TRANSPORT': transport,
                'CQRS_IT_URL': urls,
                'CQRS_IT_EXCHANGE': self.exchange,
                'CQRS_IT_QUEUE': queue,
                'CQRS_IT_DB': db,
                'CQRS_IT_EXTRA': extra,
            }

        master_db = str(workdir / 'master.sqlite3')
        self.master = Service(
            'master', HERE / 'master_service', env(orders[0], f'cl_{token}_master', master_db),
            master_db,
        )  # fmt: skip
        self.replicas: list[Service] = []
        for index in range(replicas):
            db = f'cqrs_cl_{token}_{index}'
            order = orders[1 + index % (len(orders) - 1)]
            self.replicas.append(
                Service(
                    'replica', HERE / 'replica_service', env(order, f'cl_{token}_r{index}', db), db
                )  # fmt: skip
            )
        self.consumers: list[Consumer] = []
        self._owners: list[tuple[Service, Consumer]] = []
        self._drivers: list[Driver] = []

    def queue(self, replica: Service) -> str:
        return replica.env['CQRS_IT_QUEUE']

    def dead_letter_queue(self, replica: Service) -> str:
        return f'dead_letter_{self.queue(replica)}'

    def setup(self) -> None:
        with psycopg.connect(dbname='postgres', autocommit=True, **PG) as conn:
            for replica in self.replicas:
                conn.execute(f'CREATE DATABASE "{replica.db}"')
        self.master.manage('migrate', '--run-syncdb', '-v0', check=True)
        for replica in self.replicas:
            replica.manage('migrate', '--run-syncdb', '-v0', check=True)

    def teardown(self) -> None:
        for driver in self._drivers:
            if driver.process.poll() is None:
                driver.process.kill()
                driver.process.wait(10)
        while self.consumers:
            self.consumers.pop().stop()
        if any(self.cluster.accepting(node) for node in self.cluster.nodes):
            queues = [q for r in self.replicas for q in (self.queue(r), self.dead_letter_queue(r))]
            self.cluster.delete_queues(*queues)
            with contextlib.suppress(Exception), self.cluster.channel() as ch:
                ch.exchange_delete(self.exchange)
        with psycopg.connect(dbname='postgres', autocommit=True, **PG) as conn:
            for replica in self.replicas:
                conn.execute(f'DROP DATABASE IF EXISTS "{replica.db}" WITH (FORCE)')

    # Workers and the master ---------------------------------------------------------------------

    def consume(self, replica: Service, workers: int, timeout: float = 60.0) -> Consumer:
        """Start ``cqrs_consume -w <workers>`` for ``replica``; wait until all consume."""
        index = len(self._owners) + 1
        consumer = Consumer(replica, ['-w', str(workers)], self.workdir / f'consumer_{index}.log',
                            {})  # fmt: skip
        self.consumers.append(consumer)
        self._owners.append((replica, consumer))
        self.wait_consumers(replica, workers, timeout, consumer)
        return consumer

    def wait_consumers(
        self, replica: Service, workers: int, timeout: float = 60.0, consumer: Any = None
    ) -> float:
        """Wait until ``workers`` consumers are on the replica's queue; seconds it took."""
        started = time.monotonic()
        queue = self.queue(replica)

        def ready() -> bool:
            if consumer is not None and consumer.proc.poll() is not None:
                raise AssertionError(f'cqrs_consume exited early:\n{consumer.log()}')
            counts = self.cluster.queue_counts(queue)
            return counts is not None and counts[1] >= workers

        wait_until(ready, timeout, 0.2, f'{workers} consumer(s) on {queue}')
        return time.monotonic() - started

    def drive(self, n: int, rate: float, rows: int = 0, first: int = 1) -> Driver:
        """Start the master's :data:`DRIVER` (``n`` saves at ``rate`` per second)."""
        index = len(self._drivers) + 1
        paths = [self.workdir / f'driver_{index}.{ext}' for ext in ('progress', 'json', 'log')]
        for path in paths[:2]:
            path.unlink(missing_ok=True)
        log = open(paths[2], 'wb')  # noqa: SIM115 (owned by the process)
        process = subprocess.Popen(
            [PYTHON, 'manage.py', 'shell', '-v', '0', '-c', DRIVER],
            cwd=self.master.directory,
            env=self.master.environ(
                {
                    'CL_N': str(n),
                    'CL_RATE': str(rate),
                    'CL_ROWS': str(rows),
                    'CL_FIRST': str(first),
                    'CL_PROGRESS': str(paths[0]),
                    'CL_RESULT': str(paths[1]),
                }
            ),  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        driver = Driver(process, *paths)
        self._drivers.append(driver)
        return driver

    def master_pids(self) -> list[int]:
        return [d.process.pid for d in self._drivers if d.process.poll() is None]

    def relay_outbox(self) -> int:
        """Messages the master kept in its outbox; relayed (``cqrs_outbox relay --once``)."""
        kept = self.master.query('SELECT COUNT(*) FROM dj_cqrs_outboxmessage')[0][0]
        if kept:
            self.master.manage('cqrs_outbox', 'relay', '--once', check=True)
        return kept

    # Checks -------------------------------------------------------------------------------------

    def master_rows(self) -> list[tuple]:
        return self.master.query(f'SELECT id, name, cqrs_revision FROM {MASTER_TABLE} ORDER BY id')

    def replica_rows(self, replica: Service) -> list[tuple]:
        return replica.query(f'SELECT id, name, cqrs_revision FROM {REPLICA_TABLE} ORDER BY id')

    def wait_equal(self, timeout: float = 120.0) -> float:
        """Wait until every replica equals the master row by row; seconds it took."""
        started = time.monotonic()
        expected = self.master_rows()
        try:
            wait_until(
                lambda: all(self.replica_rows(r) == expected for r in self.replicas),
                timeout, 0.5, 'every replica to equal the master',
            )  # fmt: skip
        except AssertionError:
            pass  # the caller reports what differs
        return time.monotonic() - started

    def diverged(self, replica: Service) -> dict[str, int]:
        """Rows missing in the replica, and rows present with another name or revision."""
        master = {row[0]: row for row in self.master_rows()}
        replica_rows = {row[0]: row for row in self.replica_rows(replica)}
        return {
            'missing': len(master.keys() - replica_rows.keys()),
            'extra': len(replica_rows.keys() - master.keys()),
            'different': sum(1 for pk, row in replica_rows.items()
                             if pk in master and master[pk] != row),
        }  # fmt: skip

    def dead_letters(self, replica: Service) -> int:
        counts = self.cluster.queue_counts(self.dead_letter_queue(replica))
        return -1 if counts is None else counts[0]

    def log_counts(self, replica: Service) -> dict[str, int]:
        """Counts of the consumer log lines of ``replica`` (all its consumers so far)."""
        text = ''.join(c.log() for owner, c in self._owners if owner is replica)
        return {
            'applied': text.count('CQRS is applied'),
            'duplicate': text.count('Received duplicate CQRS data'),
            'stale': text.count('Wrong CQRS sync order'),
            'reconnects': text.count('Reconnecting'),
        }

    def worker_nodes(self, consumer: Consumer) -> list[Node]:
        """The nodes the workers of ``consumer`` are connected to."""
        return self.cluster.connected_nodes(consumer.worker_pids())


def record(scenario: str, figures: dict[str, Any]) -> None:
    """Print a scenario's figures (shown with ``pytest -rP``) and append them, as one JSON
    line, to the file named by ``CQRS_CLUSTER_REPORT`` if it is set."""
    import os

    line = json.dumps({'scenario': scenario, **figures}, sort_keys=True)
    print(line)
    path = os.environ.get('CQRS_CLUSTER_REPORT')
    if path:
        with open(path, 'a') as report:
            report.write(line + '\n')


def finish(
    services: ClusterServices, driver, scenario: str, extra: dict, wait: bool = True
) -> dict:
    """Wait for the master's run (and, with ``wait``, the replicas); the figures."""
    result = driver.result()
    relayed = services.relay_outbox()
    catch_up = services.wait_equal() if wait else 0.0
    figures = {
        'published': result['published'],
        'confirmed': result['confirmed'],
        'kept_in_outbox_then_relayed': relayed,
        'publish_errors': result['errors'],
        'max_confirm_gap_s': round(result['max_confirm_gap'], 2),
        'catch_up_s': round(catch_up, 1),
        **extra,
    }
    for index, replica in enumerate(services.replicas):
        diverged = services.diverged(replica)
        logs = services.log_counts(replica)
        figures[f'replica{index}'] = {
            'rows': len(services.replica_rows(replica)),
            'applied': logs['applied'],
            'duplicates_skipped': logs['duplicate'],
            'stale_skipped': logs['stale'],
            'lost': diverged['missing'],
            'diverged': diverged['different'] + diverged['extra'],
            'dead_letters': services.dead_letters(replica),
        }
    record(scenario, figures)
    return figures


def assert_nothing_lost(services: ClusterServices, figures: dict, n: int) -> None:
    assert figures['published'] == n
    assert figures['publish_errors'] == 0
    # Every message was confirmed by the broker, at once or after a stay in the outbox.
    assert figures['confirmed'] + figures['kept_in_outbox_then_relayed'] == n, figures
    assert len(services.master_rows()) == n
    for index, replica in enumerate(services.replicas):
        got = figures[f'replica{index}']
        assert services.replica_rows(replica) == services.master_rows(), got
        assert got['lost'] == 0 and got['diverged'] == 0, got
        assert got['dead_letters'] == 0, got
