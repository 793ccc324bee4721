"""Benchmark steps that run inside a service (Django set up from ``bench_settings``).

``python bench_tasks.py <task> [options]`` prints one JSON object on stdout. The harness
(``benchmarks/run.py``) sets the environment (role, database, queue) and runs these.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]
os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'bench_settings')

import django  # noqa: E402  (sys.path and settings first)

django.setup()

import bench_trace  # noqa: E402
from django.db import connection, transaction  # noqa: E402


def _fields(i: int) -> dict:
    return {
        'name': f'item {i}',
        'qty': i % 1000,
        'price': Decimal(i % 10000) / 100,
        'note': 'x' * 40,
    }


def produce(n: int, repeat: int) -> dict:
    """N creates, each in its own transaction: CQRS model vs the same plain model.

    With asynchronous confirms (the default) a CQRS run's messages may still be in flight when
    its last save returns: they are flushed before the next run starts, so they never slow the
    plain model's run, and the time until the last confirm is reported as well
    (``sustained_ratio``: saves/s counted until every message was confirmed).
    """
    from bench_master.models import Item, PlainItem

    from dj_cqrs.transport import async_publisher, kombu_publisher

    def cpu() -> float:
        # Every thread of this process (the publishing thread too), user and system time.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def timed(model: type, start: int) -> tuple[float, float, float]:
        """saves/s until the last save, saves/s until the last confirm, CPU µs per save."""
        cpu_began = cpu()
        began = time.perf_counter()
        for i in range(start, start + n):
            model.objects.create(**_fields(i))
        saved = time.perf_counter()
        if not (async_publisher.flush(60) and kombu_publisher.flush(60)):
            raise RuntimeError('messages still unconfirmed after 60 s')
        done = time.perf_counter()
        return n / (saved - began), n / (done - began), (cpu() - cpu_began) / n * 1e6

    # Warm-up: connection, publisher channel, statement caches.
    for model in (Item, PlainItem):
        for i in range(20):
            model.objects.create(**_fields(i))
    async_publisher.flush(60)
    cqrs_rates, plain_rates, ratios, sustained = [], [], [], []
    cqrs_cpu, plain_cpu = [], []
    for r in range(repeat):
        plain, _, plain_us = timed(PlainItem, (r + 1) * n)
        cqrs, cqrs_confirmed, cqrs_us = timed(Item, (r + 1) * n)
        plain_rates.append(plain)
        cqrs_rates.append(cqrs)
        ratios.append(cqrs / plain)
        sustained.append(cqrs_confirmed / plain)
        plain_cpu.append(plain_us)
        cqrs_cpu.append(cqrs_us)
    return {
        'cqrs_saves_per_s': statistics.median(cqrs_rates),
        'plain_saves_per_s': statistics.median(plain_rates),
        'overhead_ratio': statistics.median(ratios),
        'sustained_ratio': statistics.median(sustained),
        'ratios': ratios,
        # The master process's CPU per save (resource.getrusage, all its threads, until the
        # last confirm): what the broker's CPU on the same cores does not blur.
        'cqrs_cpu_us_per_save': statistics.median(cqrs_cpu),
        'plain_cpu_us_per_save': statistics.median(plain_cpu),
        'added_cpu_us_per_save': statistics.median(
            c - p for c, p in zip(cqrs_cpu, plain_cpu, strict=True)
        ),
        'messages': Item.objects.count(),
    }


def prefill(n: int, exchange: str) -> dict:
    """Publish N create messages of ``bench_item`` straight to the exchange (no master)."""
    import pika

    from dj_cqrs.conf import get_settings
    from dj_cqrs.dataclasses import TransportPayload
    from dj_cqrs.transport.amqp import connection_parameters

    updated = '2026-01-01T00:00:00.000000+00:00'
    if 'Kombu' in (get_settings().transport or ''):
        return _prefill_kombu(n, updated)
    params = connection_parameters(get_settings())
    conn = pika.BlockingConnection(params)
    channel = conn.channel()
    props = pika.BasicProperties(content_type='text/plain', delivery_mode=2)
    began = time.perf_counter()
    for i in range(1, n + 1):
        data = {'id': i, **_fields(i), 'cqrs_revision': 0, 'cqrs_updated': updated}
        data['price'] = str(data['price'])
        body = TransportPayload('SAVE', 'bench_item', data, i).encode()
        channel.basic_publish(exchange, 'bench_item', body, props)
    conn.close()
    return {'published': n, 'seconds': time.perf_counter() - began}


def _prefill_kombu(n: int, updated: str) -> dict:
    """The same messages through Kombu's producer (any Kombu broker: AMQP, Redis)."""
    import kombu

    from dj_cqrs.dataclasses import TransportPayload
    from dj_cqrs.transport import kombu as kombu_transport

    began = time.perf_counter()
    with kombu_transport.connect() as connection:
        producer = kombu.Producer(connection.channel(), exchange=kombu_transport.exchange())
        for i in range(1, n + 1):
            data = {'id': i, **_fields(i), 'cqrs_revision': 0, 'cqrs_updated': updated}
            data['price'] = str(data['price'])
            kombu_transport.publish(producer, TransportPayload('SAVE', 'bench_item', data, i))
    return {'published': n, 'seconds': time.perf_counter() - began}


def latency(rate: float, seconds: float, replica_db: str, backend: str) -> dict:
    """Changes at a steady rate; for each, the time until the replica row shows it."""
    from bench_master.models import Item

    read = _replica_reader(replica_db, backend)
    trace = bench_trace.note if os.environ.get('BENCH_TRACE') else None
    interval = 1.0 / rate
    samples: list[float] = []
    saves: list[float] = []
    missed = 0
    objs: list = []
    count = int(rate * seconds)
    start = time.perf_counter()
    for k in range(count):
        due = start + k * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        began = time.perf_counter()
        wall = time.time()
        if k % 2 == 0 or not objs:
            obj = Item.objects.create(**_fields(k))
            objs.append(obj)
            expected = 0
        else:
            obj = objs[(k // 2) % len(objs)]
            obj.qty += 1
            obj.save()
            obj.refresh_from_db(fields=['cqrs_revision'])
        expected = obj.cqrs_revision
        saves.append((time.perf_counter() - began) * 1000)
        if trace:
            trace('save_start', obj.pk, expected, wall)
            trace('save_end', obj.pk, expected, wall + saves[-1] / 1000)
        deadline = began + 2.0
        while True:
            revision = read(obj.pk)
            if revision is not None and revision >= expected:
                samples.append((time.perf_counter() - began) * 1000)
                if trace:
                    trace('seen', obj.pk, expected, wall + samples[-1] / 1000)
                break
            if time.perf_counter() > deadline:
                missed += 1
                break
            time.sleep(0.0002)
    samples.sort()

    def pct(p: float) -> float | None:
        if not samples:
            return None
        return samples[min(len(samples) - 1, int(round(p / 100 * (len(samples) - 1))))]

    return {
        'changes': count,
        'missed': missed,
        'p50_ms': pct(50),
        'p95_ms': pct(95),
        'p99_ms': pct(99),
        'max_ms': samples[-1] if samples else None,
        # How long save() itself took (commit, then the publish waits for the confirm).
        'save_p50_ms': statistics.median(saves) if saves else None,
        'achieved_rate': count / (time.perf_counter() - start),
    }


def latency_stream(rate: float, seconds: float, replica_db: str, backend: str) -> dict:
    """Creates at a steady rate without waiting for each (for rates where a round trip per
    change does not fit the interval); a second thread watches the replica table and notes
    when each row appears. Latency: save() call to the row seen (within ~0.2 ms of polling)."""
    from bench_master.models import Item

    interval = 1.0 / rate
    count = int(rate * seconds)
    began: dict[int, float] = {}
    seen: dict[int, float] = {}
    saves: list[float] = []
    finished = threading.Event()

    def watch() -> None:
        newest = _replica_newest(replica_db, backend)  # a connection of this thread
        last = 0
        while not finished.is_set() or len(seen) < len(began):
            now = time.perf_counter()
            for pk in newest(last):
                seen.setdefault(pk, now)
                last = max(last, pk)
            if finished.is_set() and now - finish_time[0] > 5:
                return
            time.sleep(0.0002)

    finish_time = [0.0]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    for k in range(count):
        due = start + k * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        t0 = time.perf_counter()
        obj = Item.objects.create(**_fields(k))
        began[obj.pk] = t0
        saves.append((time.perf_counter() - t0) * 1000)
    achieved = count / (time.perf_counter() - start)
    finish_time[0] = time.perf_counter()
    finished.set()
    watcher.join(10)
    samples = sorted((seen[pk] - t0) * 1000 for pk, t0 in began.items() if pk in seen)

    def pct(p: float) -> float | None:
        if not samples:
            return None
        return samples[min(len(samples) - 1, int(round(p / 100 * (len(samples) - 1))))]

    return {
        'rate': rate,
        'changes': count,
        'missed': count - len(samples),
        'p50_ms': pct(50),
        'p95_ms': pct(95),
        'p99_ms': pct(99),
        'max_ms': samples[-1] if samples else None,
        'save_p50_ms': statistics.median(saves) if saves else None,
        'achieved_rate': achieved,
    }


def _replica_newest(replica_db: str, backend: str):
    """``newest(last)``: ids of the replica rows above ``last``."""
    table = 'bench_replica_itemreplica'
    if backend == 'postgres':
        import psycopg

        conn = psycopg.connect(
            host='127.0.0.1', user='postgres', dbname=replica_db, autocommit=True
        )

        def newest(last: int) -> list[int]:
            rows = conn.execute(f'SELECT id FROM {table} WHERE id > %s', (last,)).fetchall()
            return [row[0] for row in rows]

        return newest
    import sqlite3

    conn = sqlite3.connect(replica_db, isolation_level=None, timeout=10)

    def newest(last: int) -> list[int]:
        return [row[0] for row in conn.execute(f'SELECT id FROM {table} WHERE id > ?', (last,))]

    return newest


def _replica_reader(replica_db: str, backend: str):
    table = 'bench_replica_itemreplica'
    if backend == 'postgres':
        import psycopg

        conn = psycopg.connect(
            host='127.0.0.1', user='postgres', dbname=replica_db, autocommit=True
        )

        def read(pk: int) -> int | None:
            row = conn.execute(f'SELECT cqrs_revision FROM {table} WHERE id = %s', (pk,)).fetchone()
            return row[0] if row else None

        return read
    if backend == 'mariadb':
        import MySQLdb

        conn = MySQLdb.connect(
            host=os.environ.get('MYSQL_HOST', '127.0.0.1'),
            port=int(os.environ.get('MYSQL_PORT', '3306')),
            user=os.environ.get('MYSQL_USER', 'root'),
            password=os.environ.get('MYSQL_PASSWORD', ''),
            database=replica_db,
            autocommit=True,
        )

        def read(pk: int) -> int | None:
            cursor = conn.cursor()
            cursor.execute(f'SELECT cqrs_revision FROM {table} WHERE id = %s', (pk,))
            row = cursor.fetchone()
            return row[0] if row else None

        return read
    import sqlite3

    conn = sqlite3.connect(replica_db, isolation_level=None, timeout=10)

    def read(pk: int) -> int | None:
        row = conn.execute(f'SELECT cqrs_revision FROM {table} WHERE id = ?', (pk,)).fetchone()
        return row[0] if row else None

    return read


def populate(n: int) -> dict:
    """N master rows written directly (no messages), the input of the bulk dump."""
    from bench_master.models import Item
    from django.utils import timezone

    now = timezone.now()
    began = time.perf_counter()
    with transaction.atomic():
        Item.objects.all().delete()
        batch = []
        for i in range(1, n + 1):
            batch.append(Item(id=i, cqrs_revision=i % 3, cqrs_updated=now, **_fields(i)))
            if len(batch) == 5000:
                Item.objects.bulk_create(batch)
                batch = []
        Item.objects.bulk_create(batch)
    if connection.vendor == 'postgresql':
        with connection.cursor() as cursor:
            cursor.execute('ANALYZE bench_master_item')
    return {'rows': n, 'seconds': time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('task', choices=['produce', 'prefill', 'latency', 'populate'])
    parser.add_argument('--n', type=int, default=1000)
    parser.add_argument('--repeat', type=int, default=1)
    parser.add_argument('--exchange', default='cqrs')
    parser.add_argument('--rate', type=float, default=50.0)
    parser.add_argument('--seconds', type=float, default=10.0)
    parser.add_argument('--replica-db', default='')
    parser.add_argument('--backend', default='sqlite')
    args = parser.parse_args()
    if args.task == 'produce':
        result = produce(args.n, args.repeat)
    elif args.task == 'prefill':
        result = prefill(args.n, args.exchange)
    elif args.task == 'latency':
        run = latency if args.rate <= 50 else latency_stream
        result = run(args.rate, args.seconds, args.replica_db, args.backend)
    else:
        result = populate(args.n)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
