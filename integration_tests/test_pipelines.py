"""The diff and deleted-rows pipelines between two real services, wired by shell pipes.

The master (SQLite) and the replica (PostgreSQL) are separate Django projects; the repairs go
over RabbitMQ to a running ``cqrs_consume``.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import sqlite3
import subprocess

from integration_tests.harness import PYTHON, Service
from tests.golden import golden_dir

PARENT = 'replicaapp_goldenparentreplica'
CODED = 'replicaapp_codedreplica'
UUIDS = 'replicaapp_goldenuuidreplica'

SEED = (
    'import uuid\n'
    'from masterapp.models import Coded, GoldenParent, GoldenUUID\n'
    "for pk in range(1, 6): GoldenParent.objects.create(id=pk, name=f'parent {pk}')\n"
    "for code in ('a', 'b', 'c'): Coded.objects.create(code=code, name=code.upper())\n"
    "GoldenUUID.objects.create(id=uuid.UUID(int=1), name='u1')\n"
    "GoldenUUID.objects.create(id=uuid.UUID(int=2), name='u2')\n"
)


def stage(service: Service, *args: str) -> str:
    """One pipe stage: ``manage.py <args>`` of ``service`` with its own environment."""
    env = service.environ()
    assignments = ' '.join(f'{key}={shlex.quote(env[key])}' for key in (*service.env, 'PYTHONPATH'))
    command = shlex.join([PYTHON, 'manage.py', *args])
    directory = shlex.quote(str(service.directory))
    return f'(cd {directory} && env -u DJANGO_SETTINGS_MODULE {assignments} {command})'


def pipe(*stages: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ['bash', '-o', 'pipefail', '-c', ' | '.join(stages)],
        capture_output=True,
        text=True,
        timeout=180,
    )


def synced(stdout: str) -> int:
    """Rows re-sent: the sum of the ``<k> instance(s) synced.`` lines (one per diff line)."""
    return sum(int(n) for n in re.findall(r'^(\d+) instance\(s\) synced\.$', stdout, re.M))


def rows(service: Service, table: str, columns: str) -> list[tuple]:
    return service.query(f'SELECT {columns} FROM {table} ORDER BY 1')


def seed_and_replicate(master, replica, consumer, wait_until) -> None:
    consumer()
    master.shell(SEED)
    wait_until(
        lambda: (
            len(rows(replica, PARENT, 'id')) == 5
            and len(rows(replica, CODED, 'code')) == 3
            and len(rows(replica, UUIDS, 'id')) == 2
        ),
        what='seed replicated',
    )


def test_diff_pipeline_repairs_missing_and_stale_rows(master, replica, consumer, wait_until):
    """``cqrs_diff_master | cqrs_diff_replica | cqrs_diff_sync`` re-sends what the replica lacks."""
    seed_and_replicate(master, replica, consumer, wait_until)
    replica.query(f'DELETE FROM {PARENT} WHERE id = 3')
    replica.query(f"UPDATE {PARENT} SET cqrs_revision = 99, name = 'stale' WHERE id = 1")
    replica.query(f"DELETE FROM {CODED} WHERE code = 'b'")
    replica.query(f"UPDATE {CODED} SET cqrs_revision = 7 WHERE code = 'c'")

    for cqrs_id in ('golden_parent', 'it_coded'):
        result = pipe(
            stage(master, 'cqrs_diff_master', '--cqrs-id', cqrs_id, '--batch', '2'),
            stage(replica, 'cqrs_diff_replica'),
            stage(master, 'cqrs_diff_sync', '--batch', '10'),
        )
        assert result.returncode == 0, result.stderr
        assert synced(result.stdout) == 2, result.stdout

    expected_parents = [(pk, f'parent {pk}', 0) for pk in range(1, 6)]
    wait_until(
        lambda: rows(replica, PARENT, 'id, name, cqrs_revision') == expected_parents,
        what='parents repaired',
    )
    wait_until(
        lambda: rows(replica, CODED, 'code, cqrs_revision') == [('a', 0), ('b', 0), ('c', 0)],
        what='coded rows repaired',
    )
    check = pipe(
        stage(master, 'cqrs_diff_master', '-cid', 'golden_parent'),
        stage(replica, 'cqrs_diff_replica'),
    )
    assert check.returncode == 0 and check.stdout.count('\n') == 1, check.stdout


def test_diff_sync_without_queue_broadcasts_uuid_rows(master, replica, consumer, wait_until):
    """A diff stream whose queue is ``None`` broadcasts; UUID pks travel as strings."""
    seed_and_replicate(master, replica, consumer, wait_until)
    replica.query(f'DELETE FROM {UUIDS}')
    result = pipe(
        stage(master, 'cqrs_diff_master', '-cid', 'golden_uuid'),
        stage(replica, 'cqrs_diff_replica'),
        "sed '1s/,[^,]*$/,None/'",
        stage(master, 'cqrs_diff_sync', '-p'),
    )
    assert result.returncode == 0, result.stderr
    assert "PK to resync: {'00000000-0000-0000-0000-000000000001'," in result.stderr
    wait_until(lambda: len(rows(replica, UUIDS, 'id')) == 2, what='uuid rows broadcast back')


def test_deleted_pipeline_removes_rows_deleted_on_the_master(master, replica, consumer, wait_until):
    """``cqrs_deleted_diff_replica | cqrs_deleted_diff_master | cqrs_deleted_sync_replica``."""
    seed_and_replicate(master, replica, consumer, wait_until)
    # Deleted on the master without a message (raw SQL): the replica still has them.
    with contextlib.closing(sqlite3.connect(master.db, timeout=30)) as conn:
        conn.execute('DELETE FROM masterapp_goldenparent WHERE id IN (2, 4)')
        conn.execute("DELETE FROM masterapp_coded WHERE code = 'a'")
        conn.commit()
    for cqrs_id in ('golden_parent', 'it_coded'):
        result = pipe(
            stage(replica, 'cqrs_deleted_diff_replica', '--cqrs-id', cqrs_id, '--batch', '2'),
            stage(master, 'cqrs_deleted_diff_master'),
            stage(replica, 'cqrs_deleted_sync_replica'),
        )
        assert result.returncode == 0, result.stderr
        assert 'PK to delete: ' in result.stderr
    assert rows(replica, PARENT, 'id') == [(1,), (3,), (5,)]
    assert rows(replica, CODED, 'code') == [('b',), ('c',)]


def test_bulk_dump_pipes_into_bulk_load_across_services(master, replica, consumer, wait_until):
    """``cqrs_bulk_dump -o - | cqrs_bulk_load -i -`` seeds an empty PostgreSQL replica."""
    master.shell(SEED)
    result = pipe(
        stage(master, 'cqrs_bulk_dump', '-c', 'it_coded', '-o', '-', '-b', '2'),
        stage(replica, 'cqrs_bulk_load', '-i', '-', '--clear'),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith('Done!\n3 instance(s) loaded.\n')
    assert rows(replica, CODED, 'code, name') == [('a', 'A'), ('b', 'B'), ('c', 'C')]


def test_golden_dump_files_load_into_the_postgresql_replica(replica):
    """The original's dump files load into the PostgreSQL replica through our command."""
    counts = {'parent': 3, 'basic': 5, 'uuid': 1, 'serialized': 1, 'fields': 1}
    for name, count in counts.items():
        done = replica.manage(
            'cqrs_bulk_load', '-i', str(golden_dir() / 'files' / f'bulk_dump_golden_{name}.dump')
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.endswith(f'Done!\n{count} instance(s) loaded.\n')
    basic = rows(replica, 'replicaapp_goldenbasicreplica', 'id, amount::text, big')
    assert [row[0] for row in basic] == [1, 3, 4, 5, 6]
    assert basic[0] == (1, '99.99', 9007199254740993)
    assert rows(replica, UUIDS, 'id::text, name') == [
        ('aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee', 'uuid one v2')
    ]
