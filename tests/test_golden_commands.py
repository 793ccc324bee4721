"""The original's captured command runs replayed against our commands (golden/).

Error cases from ``errors.json`` run twice: through ``call_command`` (same message) and as
real ``manage.py`` subprocesses (same exit code, stdout and stderr, byte for byte). The dump
files and diff streams of ``files/`` load and pipe through our commands.
"""

from __future__ import annotations

import datetime
import io
import json
import uuid
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.test import TestCase, override_settings

from dj_cqrs.transport import InProcessTransport
from tests import golden
from tests.cmdproject.runner import SAME_ON_EVERY_DB, Project
from tests.dj_master.models import (
    GoldenBasic,
    GoldenFields,
    GoldenParent,
    GoldenSerialized,
    GoldenUUID,
)
from tests.dj_replica import models as replica_models

NOT_OURS = ('cqrs_consume', 'cqrs_dead_letters')  # other helpers replay those


def error_cases():
    cases = golden.load('errors.json')['cases']
    return [c for c in cases if c['argv'][2] not in NOT_OURS]


def case_id(case):
    return case['case'].replace(' ', '_')


def prepare_files(base):
    """The files the golden error cases name under ``<golden-project>/dumps``."""
    dumps = base / 'dumps'
    dumps.mkdir(exist_ok=True)
    (dumps / 'golden_basic.dump').write_text('golden_basic')
    (dumps / 'empty.dump').write_text('')
    (dumps / 'wrong.dump').write_text('golden_nope\n{}')
    bad = [
        'golden_parent',
        '{broken',
        json.dumps({'id': 5, 'name': 'no revision'}),
        json.dumps(
            {'id': 6, 'name': 'ok', 'cqrs_revision': 0, 'cqrs_updated': '2024-01-01 00:00:00+00:00'}
        ),
    ]
    (dumps / 'badlines.dump').write_text('\n'.join(bad))


def substitute(text, base):
    return text.replace('<golden-project>', str(base)) if isinstance(text, str) else text


# ------------------------------------------------------------------ errors via call_command


@pytest.mark.django_db
@pytest.mark.parametrize('case', error_cases(), ids=case_id)
def test_error_case_through_call_command(case, tmp_path, caplog):
    """Each golden error case gives the same message (CommandError for exit 1) in-process."""
    prepare_files(tmp_path)
    args = [substitute(a, tmp_path) for a in case['argv'][3:]]
    options = {}
    if case['stdin'] is not None:
        options['stdin'] = io.StringIO(case['stdin'])
    out, err = io.StringIO(), io.StringIO()
    if case['exit_code'] == 0:
        call_command(case['argv'][2], *args, stdout=out, stderr=err, **options)
        logged = [f'{r.levelname} {r.name} {r.getMessage()}' for r in caplog.records]
        expected = substitute(case['stderr'], tmp_path)
        assert err.getvalue() == ''.join(
            line + '\n' for line in expected.splitlines() if line not in logged
        )
        assert out.getvalue() == case['stdout']
        return
    with pytest.raises(CommandError) as raised:
        call_command(case['argv'][2], *args, stdout=out, stderr=err, **options)
    last_line = substitute(case['stderr'], tmp_path).splitlines()[-1]
    if case['exit_code'] == 1:
        assert last_line == f'CommandError: {raised.value}'
    else:
        assert last_line.endswith(str(raised.value).removeprefix('Error: '))


# ------------------------------------------------------------------- errors via manage.py


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp('golden_cmds'))
    project.migrate()
    prepare_files(project.workdir)
    return project


@pytest.fixture(scope='module')
def subprocess_results(project):
    cases = error_cases()
    calls = [
        (
            'master' if case['side'] == 'master' else 'replica',
            tuple(substitute(a, project.workdir) for a in case['argv'][2:]),
            case['stdin'],
        )
        for case in cases
    ]
    return dict(zip([case_id(c) for c in cases], project.run_many(calls), strict=True))


@pytest.mark.skipif(SAME_ON_EVERY_DB, reason='manage.py runs on its own SQLite file')
@pytest.mark.parametrize('case', error_cases(), ids=case_id)
def test_error_case_through_manage_py(case, project, subprocess_results):
    """``manage.py`` gives the original's exit code, stdout and stderr, byte for byte."""
    result = subprocess_results[case_id(case)]
    assert result.returncode == case['exit_code']
    assert result.stdout == case['stdout']
    assert result.stderr == substitute(case['stderr'], project.workdir)


# --------------------------------------------------------------------- dump files and streams


def golden_text(name):
    return (golden.golden_dir() / 'files' / name).read_text(encoding='utf-8')


def replica_rows(model):
    return [
        {f.attname: getattr(row, f.attname) for f in model._meta.concrete_fields}
        for row in model.objects.order_by('pk')
    ]


@pytest.mark.django_db
def test_golden_dump_files_load_into_the_replica_tables():
    """The five dump files load into exactly the replica tables the original produced."""
    for name in ('parent', 'basic', 'uuid', 'serialized', 'fields'):
        err = io.StringIO()
        call_command(
            'cqrs_bulk_load',
            '-i',
            '-',
            stdin=io.StringIO(golden_text(f'bulk_dump_golden_{name}.dump')),
            stderr=err,
        )
        assert err.getvalue().startswith('Done!\n')
    tables = golden.load('replica/bulk_load_tables.json')['tables']
    models = {
        m.CQRS_ID: m
        for m in vars(replica_models).values()
        if hasattr(m, '_meta') and getattr(m, 'CQRS_ID', None)
    }
    for cqrs_id, rows in tables.items():
        expected = [{k: golden.python_value(v) for k, v in row.items()} for row in rows]
        assert replica_rows(models[cqrs_id]) == expected, cqrs_id


@pytest.mark.django_db
def test_golden_second_load_logs_duplicates_like_the_original(cqrs_log):
    """Loading a dump twice gives the original's duplicate log lines and the same summary."""
    dump = golden_text('bulk_dump_golden_basic.dump')
    call_command('cqrs_bulk_load', '-i', '-', stdin=io.StringIO(dump), stderr=io.StringIO())
    err = io.StringIO()
    cqrs_log_before = len(cqrs_log())
    call_command('cqrs_bulk_load', '-i', '-', stdin=io.StringIO(dump), stderr=err)
    case = golden.load('files/bulk_commands.json')['bulk_load_again_golden_basic']
    expected_log = [
        line.replace(' django-cqrs ', ' ', 1) for line in case['stderr'].splitlines()[:-2]
    ]
    assert cqrs_log()[cqrs_log_before:] == expected_log
    assert err.getvalue() == 'Done!\n5 instance(s) loaded.\n'


def _master_like_golden():
    """Master rows equal to the ones the original dumped (values and cqrs fields)."""
    InProcessTransport.apply = False
    for line in golden_text('bulk_dump_golden_parent.dump').splitlines()[1:]:
        row = json.loads(line)
        GoldenParent.objects.create(id=row['id'], name=row['name'])
        GoldenParent.objects.filter(id=row['id']).update(
            cqrs_revision=row['cqrs_revision'], cqrs_updated=row['cqrs_updated']
        )
    (row,) = [json.loads(x) for x in golden_text('bulk_dump_golden_uuid.dump').splitlines()[1:]]
    GoldenUUID.objects.create(id=uuid.UUID(row['id']), name=row['name'])
    GoldenUUID.objects.update(cqrs_revision=row['cqrs_revision'], cqrs_updated=row['cqrs_updated'])
    (row,) = [json.loads(x) for x in golden_text('bulk_dump_golden_fields.dump').splitlines()[1:]]
    GoldenFields.objects.create(id=row['id'], title=row['title'], amount=row['amount'], secret='s')
    GoldenFields.objects.update(
        cqrs_revision=row['cqrs_revision'], cqrs_updated=row['cqrs_updated']
    )
    (row,) = [
        json.loads(x) for x in golden_text('bulk_dump_golden_serialized.dump').splitlines()[1:]
    ]
    GoldenSerialized.objects.create(
        id=row['id'],
        name=row['name'],
        price=Decimal(row['price']),
        happened=datetime.datetime(2023, 7, 14, 8, 30, 0, 500, tzinfo=datetime.timezone.utc),
        parent_id=row['parent'],
    )
    GoldenSerialized.objects.update(
        cqrs_revision=row['cqrs_revision'], cqrs_updated=row['cqrs_updated']
    )


@pytest.mark.django_db
@pytest.mark.parametrize('name', ['parent', 'uuid', 'fields', 'serialized'])
def test_our_dump_has_the_original_bytes(name):
    """Dumping rows equal to the original's gives the same file, byte for byte."""
    _master_like_golden()
    out = io.StringIO()
    call_command(
        'cqrs_bulk_dump', '-c', f'golden_{name}', '-o', '-', stdout=out, stderr=io.StringIO()
    )
    assert out.getvalue() == golden_text(f'bulk_dump_golden_{name}.dump')


def _basic_rows_from_golden_dump():
    InProcessTransport.apply = False
    call_command(
        'cqrs_bulk_load',
        '-i',
        '-',
        stdin=io.StringIO(golden_text('bulk_dump_golden_basic.dump')),
        stderr=io.StringIO(),
    )
    for row in replica_models.GoldenBasicReplica.objects.order_by('pk'):
        data = {f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields}
        parent = data.pop('parent')
        data['parent_id'] = None
        GoldenBasic.objects.create(
            **{k: v for k, v in data.items() if k not in ('cqrs_revision', 'cqrs_updated')}
        )
        GoldenBasic.objects.filter(id=data['id']).update(
            cqrs_revision=data['cqrs_revision'], cqrs_updated=data['cqrs_updated']
        )
        assert parent is None or parent > 0


@pytest.mark.django_db
@override_settings(CQRS={**__import__('tests.settings').settings.CQRS, 'queue': 'golden_replica'})
def test_golden_diff_streams_pipe_through_our_commands(published):
    """The original's diff streams give the original's outputs: resync {1, 3}, delete [999]."""
    _basic_rows_from_golden_dump()
    replica = replica_models.GoldenBasicReplica.objects
    replica.filter(id=3).delete()
    replica.filter(id=1).update(cqrs_revision=99)
    out, err = io.StringIO(), io.StringIO()
    call_command(
        'cqrs_diff_replica',
        stdin=io.StringIO(golden_text('diff_master_golden_basic_stdout.txt')),
        stdout=out,
        stderr=err,
    )
    assert out.getvalue() == golden_text('diff_replica_golden_basic_stdout.txt')
    assert err.getvalue() == golden_text('diff_replica_golden_basic_stderr.txt')

    InProcessTransport.reset()
    out = io.StringIO()
    with TestCase.captureOnCommitCallbacks(execute=True):
        call_command(
            'cqrs_diff_sync',
            stdin=io.StringIO(out_text := golden_text('diff_replica_golden_basic_stdout.txt')),
            stdout=out,
        )
    case = golden.load('messages/diff_sync_basic.json')
    assert case['command']['stdin'] == out_text
    assert out.getvalue() == case['command']['stdout']
    expected = [(m['routing_key'], json.loads(golden.body(m))) for m in case['messages']]
    got = published()
    assert [k for k, _ in got] == [k for k, _ in expected]
    for (_, body), (_, original) in zip(got, expected, strict=True):
        assert body['signal_type'] == original['signal_type'] == 'SYNC'
        assert body['instance_pk'] == original['instance_pk']
        assert body['instance_data']['cqrs_revision'] == original['instance_data']['cqrs_revision']

    replica_models.GoldenBasicReplica.objects.create(
        **{**replica_rows(replica_models.GoldenBasicReplica)[0], 'id': 999}
    )
    out, err = io.StringIO(), io.StringIO()
    call_command(
        'cqrs_deleted_diff_master',
        stdin=io.StringIO(golden_text('deleted_diff_replica_golden_basic_stdout.txt')),
        stdout=out,
        stderr=err,
    )
    assert out.getvalue() == golden_text('deleted_diff_master_golden_basic_stdout.txt')
    assert err.getvalue() == golden_text('deleted_diff_master_golden_basic_stderr.txt')
    call_command('cqrs_deleted_sync_replica', stdin=io.StringIO(out.getvalue()))
    assert not replica.filter(id=999).exists()
