"""Every command, flag and pipe through real ``manage.py`` processes (SQLite file database).

The test project holds both sides (in-process transport): a SYNC published by a master
command is applied to the replica tables of the same file, so pipes can be checked end to end.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

import pytest

from tests.cmdproject.runner import SAME_ON_EVERY_DB, Project

pytestmark = pytest.mark.skipif(
    SAME_ON_EVERY_DB, reason='manage.py runs on its own SQLite file: run in the SQLite pass'
)

SEED = """
import uuid
from tests.dj_master.models import CustomPK, GoldenParent, GoldenUUID
for pk in (1, 2, 3):
    GoldenParent.objects.create(id=pk, name=f'parent {pk}')
CustomPK.objects.create(code='a', name='A')
CustomPK.objects.create(code='b', name='B')
GoldenUUID.objects.create(id=uuid.UUID('aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'), name='u')
"""
UID = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp('cmd_subprocess'))
    project.migrate()
    project.shell(SEED)
    return project


def sql(project, statement, params=()):
    with contextlib.closing(sqlite3.connect(project.db)) as conn:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows


def replica(project, table, columns='*'):
    return sql(project, f'SELECT {columns} FROM dj_replica_{table} ORDER BY 1')


def test_seed_replicated_through_the_in_process_transport(project):
    """The seed's master saves reached the replica tables (the pipes below rely on it)."""
    assert replica(project, 'goldenparentreplica', 'id, cqrs_revision') == [(1, 0), (2, 0), (3, 0)]
    assert replica(project, 'custompkreplica', 'code') == [('a',), ('b',)]


def test_bulk_dump_flags(project):
    """``-c/--cqrs-id``, ``-o/--output`` (file, ``-``, default), ``-b``, ``-p``, ``-f/--force``."""
    target = project.workdir / 'parents.dump'
    done = project.run(
        'master', 'cqrs_bulk_dump', '--cqrs-id', 'golden_parent', '--output', str(target)
    )
    assert (done.returncode, done.stdout) == (0, '')
    assert done.stderr == 'Done!\n3 instance(s) saved.\n3 instance(s) processed.\n'
    lines = target.read_text().split('\n')
    assert lines[0] == 'golden_parent' and [json.loads(x)['id'] for x in lines[1:]] == [1, 2, 3]

    streamed = project.run(
        'master', 'cqrs_bulk_dump', '-c', 'custom_pk', '-o', '-', '-b', '1', '-p'
    )
    assert streamed.stdout.split('\n')[0] == 'custom_pk' and not streamed.stdout.endswith('\n')
    assert streamed.stderr.startswith('Processing 2 records with batch size 1\n\r1 of 2 processed')
    assert streamed.stderr.endswith(
        ' ' * 20 + 'Done!\n2 instance(s) saved.\n2 instance(s) processed.\n'
    )

    first = project.run('master', 'cqrs_bulk_dump', '-c', 'golden_uuid')
    again = project.run('master', 'cqrs_bulk_dump', '-c', 'golden_uuid')
    forced = project.run('master', 'cqrs_bulk_dump', '-c', 'golden_uuid', '--force', '--batch', '5')
    assert (first.returncode, again.returncode, forced.returncode) == (0, 1, 0)
    assert again.stderr == 'CommandError: File golden_uuid.dump exists!\n'
    assert (
        json.loads((project.workdir / 'golden_uuid.dump').read_text().split('\n')[1])['id'] == UID
    )


def test_bulk_load_flags(project):
    """``-i/--input`` (file, ``-``), ``-c/--clear`` as a boolean, ``-b/--batch``; errors exit 1."""
    sql(project, "INSERT INTO dj_replica_goldenparentreplica VALUES (0, '2024-01-01', 77, 'x')")
    cleared = project.run(
        'replica', 'cqrs_bulk_load', '--input', 'parents.dump', '--clear', '--batch', '2'
    )
    assert (cleared.returncode, cleared.stderr) == (0, 'Done!\n3 instance(s) loaded.\n')
    assert replica(project, 'goldenparentreplica', 'id') == [(1,), (2,), (3,)]

    sql(project, "DELETE FROM dj_replica_custompkreplica WHERE code = 'b'")
    sql(project, "INSERT INTO dj_replica_custompkreplica VALUES (0, '2024-01-01', 'zz', 'Z')")
    dump = project.run('master', 'cqrs_bulk_dump', '-c', 'custom_pk', '-o', '-').stdout
    kept = project.run('replica', 'cqrs_bulk_load', '-i', '-', '-c', 'false', stdin=dump)
    assert kept.stderr.startswith('ERROR django-cqrs Received duplicate CQRS data: pk = a')
    assert kept.stderr.endswith('Done!\n2 instance(s) loaded.\n')
    assert replica(project, 'custompkreplica', 'code') == [('a',), ('b',), ('zz',)]

    missing = project.run('replica', 'cqrs_bulk_load', '-i', 'nope.dump')
    assert (missing.returncode, missing.stderr) == (
        1,
        "CommandError: File nope.dump doesn't exist!\n",
    )
    usage = project.run('replica', 'cqrs_bulk_load', '-i', '-', '--clear=maybe', stdin='x')
    assert usage.returncode == 2 and "not a boolean: 'maybe'" in usage.stderr


def test_sync_flags(project):
    """``-cid``, ``-f``, ``-q``, ``-b``, ``-p``: SYNCs are published and applied to the replica."""
    sql(project, 'UPDATE dj_replica_goldenparentreplica SET name = ? WHERE id = 2', ('stale',))
    result = project.run(
        'master',
        'cqrs_sync',
        '-cid',
        'golden_parent',
        '-f',
        '{"id__in": [2, 3]}',
        '-q',
        'replica',
        '-b',
        '1',
        '-p',
    )
    assert result.returncode == 0
    assert result.stdout.startswith(
        'Processing 2 records with batch size 1\n\r1 of 2 processed - 50%'
    )
    assert result.stdout.endswith('Done!\n2 instance(s) synced.\n2 instance(s) processed.\n')
    assert (
        'INFO django-cqrs CQRS is published: pk = 2 (golden_parent), correlation_id = None.\n'
        in result.stderr
    )
    assert replica(project, 'goldenparentreplica', 'name')[1] == ('parent 2',)
    long_flags = project.run(
        'master',
        'cqrs_sync',
        '--cqrs-id',
        'golden_uuid',
        '--filter',
        '{}',
        '--queue',
        'replica',
        '--batch',
        '3',
        '--progress',
    )
    assert long_flags.stdout.endswith('Done!\n1 instance(s) synced.\n1 instance(s) processed.\n')


def test_diff_pipeline_through_a_shell_pipe(project):
    """``cqrs_diff_master | cqrs_diff_replica | cqrs_diff_sync`` repairs missing and stale rows."""
    sql(project, 'DELETE FROM dj_replica_goldenparentreplica WHERE id = 3')
    sql(project, 'UPDATE dj_replica_goldenparentreplica SET cqrs_revision = 99 WHERE id = 1')
    sql(project, "DELETE FROM dj_replica_custompkreplica WHERE code = 'a'")
    for cqrs_id in ('golden_parent', 'custom_pk'):
        result = project.pipe(
            ('master', ('cqrs_diff_master', '--cqrs-id', cqrs_id, '--batch', '2')),
            ('replica', ('cqrs_diff_replica',)),
            ('master', ('cqrs_diff_sync', '-b', '10')),
        )
        assert result.returncode == 0, result.stderr
        assert 'Done!\n' in result.stdout
    assert replica(project, 'goldenparentreplica', 'id, cqrs_revision') == [(1, 0), (2, 0), (3, 0)]
    assert replica(project, 'custompkreplica', 'code')[:2] == [('a',), ('b',)]
    check = project.pipe(
        ('master', ('cqrs_diff_master', '-cid', 'golden_parent')),
        ('replica', ('cqrs_diff_replica',)),
    )
    assert check.stdout.count('\n') == 1 and check.stdout.strip().endswith(',replica')


def test_diff_pipeline_uuid_through_a_shell_pipe(project):
    """UUID pks go through the three stages as strings (the original crashed)."""
    sql(project, 'DELETE FROM dj_replica_goldenuuidreplica')
    result = project.pipe(
        ('master', ('cqrs_diff_master', '-cid', 'golden_uuid')),
        ('replica', ('cqrs_diff_replica',)),
        ('master', ('cqrs_diff_sync', '--progress')),
    )
    assert result.returncode == 0, result.stderr
    assert f"PK to resync: {{'{UID}'}}" in result.stderr
    assert len(replica(project, 'goldenuuidreplica')) == 1


def test_deleted_pipeline_through_a_shell_pipe(project):
    """``cqrs_deleted_diff_replica | cqrs_deleted_diff_master | cqrs_deleted_sync_replica``."""
    sql(project, "INSERT INTO dj_replica_goldenparentreplica VALUES (0, '2024-01-01', 999, 'x')")
    sql(project, "INSERT INTO dj_replica_custompkreplica VALUES (0, '2024-01-01', 'gone', 'G')")
    for cqrs_id in ('golden_parent', 'custom_pk'):
        result = project.pipe(
            (
                'replica',
                ('cqrs_deleted_diff_replica', '--cqrs-id', cqrs_id, '--batch', '2', '-f', '{}'),
            ),
            ('master', ('cqrs_deleted_diff_master',)),
            ('replica', ('cqrs_deleted_sync_replica',)),
        )
        assert result.returncode == 0, result.stderr
    assert replica(project, 'goldenparentreplica', 'id') == [(1,), (2,), (3,)]
    assert ('gone',) not in replica(project, 'custompkreplica', 'code')
