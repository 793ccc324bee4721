#!/usr/bin/env python3
"""The scripted demo: a master service and a replica service converging, side by side.

    python examples/demo_project/run_demo.py                 # no broker: Kombu's filesystem://
    python examples/demo_project/run_demo.py --broker amqp://guest:guest@127.0.0.1:5672//

It runs the two Django projects of this folder as separate processes, as you would in
production: ``master_service`` (its own SQLite database) makes changes with plain ORM calls,
and ``replica_service`` (its own SQLite database) runs ``manage.py cqrs_consume``. After each
step it reads both databases and prints their tables side by side once the replica has caught
up. It exits 0 when the replica converged after every step, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MASTER_DIR = HERE / 'master_service'
REPLICA_DIR = HERE / 'replica_service'
ROOT = HERE.parent.parent

Row = tuple[Any, ...]


@dataclass
class TablePair:
    """A master table and the replica table that copies it."""

    title: str
    master_columns: Sequence[str]
    master_sql: str
    replica_columns: Sequence[str]
    replica_sql: str
    expected: Callable[[Row], Row]  # master row -> what the replica must hold
    replica_key: Callable[[Row], Row]  # replica row -> comparable with expected()


PAIRS = [
    TablePair(
        'categories (default replica)',
        ('id', 'name', 'rev'),
        'SELECT id, name, cqrs_revision FROM shop_category ORDER BY id',
        ('id', 'name', 'rev'),
        'SELECT id, name, cqrs_revision FROM catalog_category ORDER BY id',
        expected=lambda r: r,
        replica_key=lambda r: r,
    ),
    TablePair(
        'products (serializer + tracked fields -> mapped replica)',
        ('id', 'name', 'price', 'category', 'rev'),
        "SELECT p.id, p.name, printf('%.2f', p.price), c.name, p.cqrs_revision "
        'FROM shop_product p JOIN shop_category c ON c.id = p.category_id ORDER BY p.id',
        ('id', 'title', 'price', 'was', 'category_name', 'rev'),
        "SELECT id, title, printf('%.2f', price), "
        "CASE WHEN previous_price IS NULL THEN NULL ELSE printf('%.2f', previous_price) END, "
        'category_name, cqrs_revision FROM catalog_productcard ORDER BY id',
        expected=lambda r: r,
        replica_key=lambda r: (r[0], r[1], r[2], r[4], r[5]),
    ),
    TablePair(
        'customers (custom-serialization replica)',
        ('id', 'first_name', 'last_name', 'email', 'rev'),
        'SELECT id, first_name, last_name, email, cqrs_revision FROM shop_customer ORDER BY id',
        ('id', 'full_name', 'email_domain', 'rev'),
        'SELECT id, full_name, email_domain, cqrs_revision FROM catalog_customercard ORDER BY id',
        expected=lambda r: (r[0], f'{r[1]} {r[2]}', r[3].rpartition('@')[2], r[4]),
        replica_key=lambda r: r,
    ),
]


@dataclass
class Step:
    title: str
    command: list[str]
    note: str = ''
    converges: bool = True  # False: the replica is expected to differ until the next step


STEPS = [
    Step('create on the master', ['demo_step', 'create']),
    Step(
        'update on the master',
        ['demo_step', 'update'],
        note=(
            "Every message is applied, yet Chess and Catan still say 'Games' on the replica:\n"
            "a product's message carries its category's name, and renaming the category\n"
            'does not re-send its products. A SYNC of those products fixes that.'
        ),
        converges=False,
    ),
    Step(
        'sync from the master',
        ['cqrs_sync', '--cqrs-id', 'product', '--filter', '{"category__name": "Board games"}'],
    ),
    Step('delete on the master', ['demo_step', 'delete']),
]


class Demo:
    def __init__(self, broker: str | None, data_dir: Path, timeout: float):
        self.broker = broker or 'filesystem://'
        self.data_dir = data_dir
        self.deadline = time.monotonic() + timeout
        token = uuid.uuid4().hex[:8]
        self.env = {
            **os.environ,
            'DEMO_DATA_DIR': str(data_dir),
            'DEMO_BROKER_URL': self.broker,
            # On a shared broker, names of our own: nothing else's messages reach this demo.
            'DEMO_QUEUE': f'demo_replica_{token}' if broker else 'demo_replica',
            'DEMO_EXCHANGE': f'cqrs_demo_{token}' if broker else 'cqrs',
            'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])),
            'PYTHONUNBUFFERED': '1',
        }
        self.env.pop('DJANGO_SETTINGS_MODULE', None)
        self.worker: subprocess.Popen | None = None
        self.worker_log = data_dir / 'replica_worker.log'
        self.master: subprocess.Popen | None = None
        self.master_log = data_dir / 'master.log'
        self.master_lines: queue.Queue[str] = queue.Queue()

    # --- processes ---------------------------------------------------------------------------

    def migrate(self) -> None:
        procs = [
            subprocess.Popen(
                [sys.executable, 'manage.py', 'migrate', '-v', '0'],
                cwd=service,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for service in (MASTER_DIR, REPLICA_DIR)
        ]
        try:
            for service, proc in zip((MASTER_DIR, REPLICA_DIR), procs, strict=True):
                out, _ = proc.communicate(timeout=max(5.0, self.remaining()))
                if proc.returncode != 0:
                    raise DemoError(f'{service.name}: migrate failed\n{out}')
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def start_worker(self) -> None:
        with open(self.worker_log, 'wb') as log:
            self.worker = subprocess.Popen(
                [sys.executable, 'manage.py', 'cqrs_consume', '--workers', '1'],
                cwd=REPLICA_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )

    def start_master(self) -> None:
        """The master service: one process that runs the steps it reads on stdin."""
        with open(self.master_log, 'wb') as log:
            self.master = subprocess.Popen(
                [sys.executable, 'manage.py', 'demo_step', '--stdin'],
                cwd=MASTER_DIR,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,  # its "CQRS is published" log lines
                text=True,
            )
        threading.Thread(target=self._read_master, daemon=True).start()

    def _read_master(self) -> None:
        assert self.master is not None and self.master.stdout is not None
        for line in self.master.stdout:
            self.master_lines.put(line.rstrip('\n'))
        self.master_lines.put('@@exited')

    def on_master(self, command: list[str]) -> list[str]:
        """Run one step in the master process; its output lines."""
        assert self.master is not None and self.master.stdin is not None
        self.master.stdin.write(json.dumps(command) + '\n')
        self.master.stdin.flush()
        out: list[str] = []
        while True:
            try:
                line = self.master_lines.get(timeout=max(0.1, self.remaining()))
            except queue.Empty:
                raise DemoError(f'the master did not finish {command} in time') from None
            if line == '@@done':
                return out
            if line in ('@@failed', '@@exited'):
                log = self.master_log.read_text(errors='replace')
                raise DemoError(f'the master failed on {command}:\n' + '\n'.join(out) + log)
            out.append(line)

    def stop_master(self) -> None:
        master, self.master = self.master, None
        if master is None:
            return
        with contextlib.suppress(OSError):
            master.stdin.close()  # type: ignore[union-attr]
        try:
            master.wait(10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(5)

    def stop_worker(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(5)

    def worker_log_text(self) -> str:
        try:
            return self.worker_log.read_text(errors='replace')
        except FileNotFoundError:
            return ''

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # --- broker ------------------------------------------------------------------------------

    def wait_until_bound(self) -> float:
        """Until the worker has bound its queue to the exchange.

        A topic exchange drops messages that no queue is bound for, so the master must not
        publish before the replica's worker has declared its queue (once declared, the queue
        keeps messages even while no worker runs).
        """
        import kombu

        started = time.monotonic()
        queue, exchange = self.env['DEMO_QUEUE'], self.env['DEMO_EXCHANGE']
        with kombu.Connection(self.broker, transport_options=self.transport_options()) as conn:
            while True:
                if self.worker is not None and self.worker.poll() is not None:
                    raise DemoError('the replica worker exited:\n' + self.worker_log_text())
                if self._bound(conn, exchange, queue):
                    return time.monotonic() - started
                if self.remaining() <= 0:
                    raise DemoError('the replica worker did not bind its queue in time')
                time.sleep(0.1)

    @staticmethod
    def _bound(conn: Any, exchange: str, queue: str) -> bool:
        channel = conn.default_channel
        if conn.transport.driver_type == 'amqp':
            try:
                ok = channel.queue_declare(queue, passive=True)
            except conn.channel_errors:
                conn.close()  # a failed passive declare closes the channel
                return False
            return ok.consumer_count >= 1
        return any(bound == queue for _key, _pattern, bound in channel.get_table(exchange))

    def transport_options(self) -> dict[str, str]:
        if not self.broker.startswith('filesystem://'):
            return {}
        broker = self.data_dir / 'broker'
        return {
            'data_folder_in': str(broker / 'messages'),
            'data_folder_out': str(broker / 'messages'),
            'control_folder': str(broker / 'control'),
        }

    def delete_broker_objects(self) -> None:
        """On a shared broker, remove this run's queues and exchange."""
        import kombu

        with kombu.Connection(self.broker, connect_timeout=5) as conn:
            channel = conn.default_channel
            for name in (self.env['DEMO_QUEUE'], f'dead_letter_{self.env["DEMO_QUEUE"]}'):
                with contextlib.suppress(Exception):
                    kombu.Queue(name, no_declare=True)(channel).delete()
            with contextlib.suppress(Exception):
                kombu.Exchange(self.env['DEMO_EXCHANGE'])(channel).delete()

    # --- tables ------------------------------------------------------------------------------

    def read(self, db: str, sql: str) -> list[Row]:
        with contextlib.closing(sqlite3.connect(self.data_dir / db, timeout=10)) as conn:
            return conn.execute(sql).fetchall()

    def snapshot(self) -> list[tuple[TablePair, list[Row], list[Row]]]:
        return [
            (
                pair,
                self.read('master.sqlite3', pair.master_sql),
                self.read('replica.sqlite3', pair.replica_sql),
            )
            for pair in PAIRS
        ]

    @staticmethod
    def applied(snapshot: list[tuple[TablePair, list[Row], list[Row]]]) -> bool:
        """Every master row is on the replica at the same revision, and nothing else is."""
        return all(
            [(r[0], r[-1]) for r in master] == [(r[0], r[-1]) for r in replica]
            for _pair, master, replica in snapshot
        )

    @staticmethod
    def equal(snapshot: list[tuple[TablePair, list[Row], list[Row]]]) -> bool:
        return all(
            [pair.expected(r) for r in master] == [pair.replica_key(r) for r in replica]
            for pair, master, replica in snapshot
        )

    def wait_converged(self, step: Step) -> tuple[float, list]:
        started = time.monotonic()
        while True:
            snap = self.snapshot()
            done = self.applied(snap) and (self.equal(snap) or not step.converges)
            if done:
                return time.monotonic() - started, snap
            if self.worker is not None and self.worker.poll() is not None:
                raise DemoError('the replica worker exited:\n' + self.worker_log_text())
            if self.remaining() <= 0:
                print(render(snap))
                raise DemoError(f'the replica did not converge in time after "{step.title}"')
            time.sleep(0.1)

    # --- the script --------------------------------------------------------------------------

    def run(self) -> None:
        transport = 'RabbitMQTransport' if self.broker.startswith('amqp') else 'KombuTransport'
        print('dj_cqrs demo: a master and a replica service, two processes, two databases')
        print(f'  master : {rel(MASTER_DIR)} (SQLite {self.data_dir / "master.sqlite3"})')
        print(f'  replica: {rel(REPLICA_DIR)} (SQLite {self.data_dir / "replica.sqlite3"})')
        shown = re.sub(r'(://[^:/@]*:)[^@]*@', r'\1****@', self.broker)  # hide the password
        print(f'  broker : {shown} ({transport}, queue {self.env["DEMO_QUEUE"]})')
        print()
        print('$ manage.py migrate                 (both services)')
        took = time.monotonic()
        self.migrate()
        print(f'  both databases created ({time.monotonic() - took:.1f} s)')
        print('$ replica_service/manage.py cqrs_consume --workers 1   (in the background)')
        self.start_worker()
        self.start_master()
        took = self.wait_until_bound()
        print(f'  replica worker is consuming its queue ({took:.1f} s)')
        for number, step in enumerate(STEPS, 1):
            print()
            print(f'== step {number}: {step.title} ' + '=' * max(0, 70 - len(step.title)))
            print(f'$ master_service/manage.py {" ".join(quote(a) for a in step.command)}')
            for line in self.on_master(step.command):
                if line.strip():
                    print(line if line.startswith('  ') else f'  master: {line.strip()}')
            took, snap = self.wait_converged(step)
            print(render(snap))
            if step.converges:
                print(f'  replica converged with the master in {took:.2f} s')
            else:
                print(f'  replica applied every message in {took:.2f} s')
                print('  ' + step.note.replace('\n', '\n  '))
        applied = self.worker_log_text().count('CQRS is applied')
        print()
        print(f'The replica worker applied {applied} messages (log: {self.worker_log}).')
        print('Converged: the replica matches the master after every step.')


class DemoError(Exception):
    """The demo could not finish; the message says why."""


def render(snapshot: list[tuple[TablePair, list[Row], list[Row]]]) -> str:
    """Master and replica tables side by side; '!=' marks a replica row that differs."""
    lines: list[str] = []
    for pair, master, replica in snapshot:
        left = table(pair.master_columns, master)
        right = table(pair.replica_columns, replica)
        width = max(len(line) for line in left)
        expected = [pair.expected(r) for r in master]
        got = [pair.replica_key(r) for r in replica]
        lines.append('')
        lines.append(f'  {pair.title}')
        lines.append(f'  {"MASTER":<{width}}     REPLICA')
        for index in range(max(len(left), len(right))):
            a = left[index] if index < len(left) else ''
            b = right[index] if index < len(right) else ''
            row = index - 2  # after the two header lines
            differs = row >= 0 and (
                row >= len(expected) or row >= len(got) or expected[row] != got[row]
            )
            lines.append(f'  {a:<{width}}  {"!=" if differs else " |"}  {b}')
    return '\n'.join(lines)


def table(columns: Sequence[str], rows: list[Row]) -> list[str]:
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ['  '.join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    out.append('  '.join('-' * w for w in widths))
    out.extend(
        '  '.join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )
    if not rows:
        out.append('(empty)')
    return out


def cell(value: Any) -> str:
    if value is None:
        return '-'
    return str(value)


def quote(arg: str) -> str:
    return f"'{arg}'" if any(ch in arg for ch in ' {}"') else arg


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stop_with_parent() -> None:
    """In the worker, before exec: on Linux, get SIGTERM if the demo itself is killed."""
    try:
        import ctypes

        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the demo's own cleanup is all there is


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--broker',
        metavar='URL',
        help='run over this broker instead of the embedded filesystem:// one, e.g. '
        'amqp://guest:guest@127.0.0.1:5672// (RabbitMQ) or redis://127.0.0.1:6379/0',
    )
    parser.add_argument(
        '--timeout', type=float, default=60.0, help='give up after this many seconds (60)'
    )
    parser.add_argument(
        '--keep', action='store_true', help='keep the databases and logs (the path is printed)'
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix='cqrs_demo_'))
    demo = Demo(args.broker, data_dir, args.timeout)
    code = 0
    # A SIGTERM (or a closed terminal) ends the demo like Ctrl-C: the cleanup below stops the
    # worker, which runs in its own process group and would otherwise outlive the demo.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        demo.run()
    except (DemoError, subprocess.TimeoutExpired) as err:
        print(f'\nDEMO FAILED: {err}', file=sys.stderr)
        log = demo.worker_log_text()
        if log:
            print('--- replica worker log (last lines) ---', file=sys.stderr)
            print('\n'.join(log.splitlines()[-30:]), file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        demo.stop_master()
        demo.stop_worker()
        if args.broker:
            with contextlib.suppress(Exception):
                demo.delete_broker_objects()
        if args.keep or code:
            print(f'Files of this run: {data_dir}')
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f'Total time: {time.monotonic() - started:.1f} s')
    return code


if __name__ == '__main__':
    sys.exit(main())
