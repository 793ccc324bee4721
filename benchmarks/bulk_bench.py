#!/usr/bin/env python
"""Throughput and peak memory of ``cqrs_bulk_dump`` and ``cqrs_bulk_load`` on SQLite.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bulk_bench.py                 # 100,000 rows
    .venv/bin/python benchmarks/bulk_bench.py --rows 100000 --rows 1000000

For each size it fills the master table ``golden_basic`` of the test project (16 columns: text,
decimal, float, date, datetime, UUID, JSON, ...) in a fresh SQLite file, then runs, as real
``manage.py`` processes:

1. ``cqrs_bulk_dump -c golden_basic -o <file>``
2. ``cqrs_bulk_load -i <file>`` into the empty replica table
3. ``cqrs_bulk_load -i <file>`` again (every line goes through the revision rules and is
   skipped as a duplicate; its log lines are discarded)

and prints rows/s (wall and CPU: user + system of that child only, robust to a busy machine),
the peak RSS of each process (``wait4`` rusage) and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANAGE = ROOT / 'tests' / 'cmdproject' / 'manage_master.py'


def run(db: Path, *args: str, quiet_stderr: bool = False) -> tuple[float, float, int, str]:
    """Run ``manage.py <args>``; (wall seconds, CPU seconds, peak RSS in MB, stderr tail)."""
    env = {**os.environ, 'CQRS_CMD_DB': str(db), 'PYTHONPATH': str(ROOT)}
    env.pop('DJANGO_SETTINGS_MODULE', None)
    started = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, str(MANAGE), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if quiet_stderr else err,
            env=env,
            cwd=db.parent,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        err.seek(0)
        tail = err.read().decode('utf-8', 'replace')[-300:]
    if proc.returncode != 0:
        raise SystemExit(f'manage.py {" ".join(args)} failed ({proc.returncode}):\n{tail}')
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, tail


def fill(db: Path, rows: int) -> None:
    """Master rows written straight to SQLite (fast; the commands are what we measure)."""
    payload = json.dumps({'z': 1, 'a': {'nested': [1, 2.5, None, True, 'ü/é']}, 'list': []})
    with sqlite3.connect(db) as conn:
        columns = (
            'id, cqrs_revision, cqrs_updated, char, text, flag, integer, big, amount, ratio, '
            'day, moment, uid, payload, optional, parent_id'
        )
        chunk = 20000
        for start in range(1, rows + 1, chunk):
            conn.executemany(
                f'INSERT INTO dj_master_goldenbasic ({columns}) VALUES '
                '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                [
                    (
                        pk,
                        pk % 7,
                        '2024-03-01 12:00:00.123456',
                        f'row {pk} / ü',
                        'Line1\nLine2 ' * 4,
                        pk % 2,
                        pk,
                        pk * 1_000_003,
                        f'{pk % 100000}.{pk % 100:02d}',
                        pk / 7,
                        '2024-02-29',
                        '2024-02-29 13:45:30.123456',
                        uuid.UUID(int=pk).hex,
                        payload,
                        None if pk % 3 else 'set',
                        None,
                    )
                    for pk in range(start, min(start + chunk, rows + 1))
                ],
            )


def bench(rows: int, workdir: Path) -> list[tuple[str, float, float, int]]:
    db = workdir / f'bench_{rows}.sqlite3'
    before = _load_average()
    run(db, 'migrate', '--run-syncdb', '-v', '0')
    fill(db, rows)
    dump_file = workdir / f'golden_basic_{rows}.dump'
    results = []
    wall, cpu, rss, tail = run(db, 'cqrs_bulk_dump', '-c', 'golden_basic', '-o', str(dump_file))
    assert f'{rows} instance(s) saved.' in tail, tail
    results.append(('dump', wall, cpu, rss))
    wall, cpu, rss, tail = run(db, 'cqrs_bulk_load', '-i', str(dump_file))
    assert f'{rows} instance(s) loaded.' in tail, tail
    results.append(('load (empty replica)', wall, cpu, rss))
    wall, cpu, rss, _ = run(db, 'cqrs_bulk_load', '-i', str(dump_file), quiet_stderr=True)
    results.append(('reload (all duplicates)', wall, cpu, rss))
    size = dump_file.stat().st_size / 1e6
    print(f'\n{rows:,} rows (dump file {size:.0f} MB); whole process, Django start included')
    print(f'  load average before {before}, after {_load_average()}')
    for name, wall, cpu, rss in results:
        print(
            f'  {name:<24} wall {wall:7.1f} s ({rows / wall:8,.0f} rows/s)  '
            f'CPU {cpu:7.1f} s ({rows / cpu:8,.0f} rows/s)  peak RSS {rss:5d} MB'
        )
    return results


def _load_average() -> str:
    return ' / '.join(f'{value:.2f}' for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rows', type=int, action='append', help='table size (repeatable)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='cqrs_bulk_bench_') as tmp:
        for rows in args.rows or [100_000]:
            bench(rows, Path(tmp))


if __name__ == '__main__':
    main()
