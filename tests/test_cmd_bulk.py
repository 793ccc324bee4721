"""``cqrs_bulk_dump`` and ``cqrs_bulk_load`` through ``call_command``."""

from __future__ import annotations

import datetime
import io
import json
import uuid
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dj_cqrs.management.bulk import load
from tests.dj_master.models import CustomPK, GoldenParent, GoldenSerialized, GoldenUUID
from tests.dj_replica.models import (
    CustomPKReplica,
    GoldenFieldsReplica,
    GoldenParentReplica,
    GoldenUUIDReplica,
)

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)


def run(name, *args, stdin=None, **options):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        options['stdin'] = io.StringIO(stdin)
    call_command(name, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def parents(count):
    for pk in range(1, count + 1):
        GoldenParent.objects.create(id=pk, name=f'parent {pk}')


def dump_lines(text):
    head, *rows = text.split('\n')
    return head, [json.loads(row) for row in rows]


def line(pk, revision=0, name='x', **extra):
    data = {'id': pk, 'name': name, 'cqrs_revision': revision, 'cqrs_updated': str(NOW)}
    data.update(extra)
    return json.dumps(data)


# ------------------------------------------------------------------------------------ dump


def test_dump_writes_header_and_one_json_row_per_line_without_final_newline(tmp_path):
    """The dump file is the CQRS_ID then one compact JSON object per row, no trailing newline."""
    parents(3)
    target = tmp_path / 'parents.dump'
    out, err = run('cqrs_bulk_dump', '--cqrs-id=golden_parent', '-o', str(target))
    text = target.read_text()
    assert not text.endswith('\n')
    head, rows = dump_lines(text)
    assert head == 'golden_parent'
    assert [r['id'] for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {'id', 'name', 'cqrs_revision', 'cqrs_updated'}
    assert ', ' not in text and ': ' not in text
    assert (out, err) == ('', 'Done!\n3 instance(s) saved.\n3 instance(s) processed.\n')


def test_dump_to_stdout_with_progress_on_stderr():
    """``-o - -b 1 -p`` writes the dump on stdout and the original's progress lines on stderr."""
    parents(2)
    out, err = run('cqrs_bulk_dump', '-c', 'golden_parent', '-o', '-', '-b', '1', '-p')
    assert out.startswith('golden_parent\n{') and not out.endswith('\n')
    assert err.startswith('Processing 2 records with batch size 1\n\r1 of 2 processed - 50% ')
    assert '\r2 of 2 processed - 100% with rate ' in err
    assert err.endswith(
        ' ...' + ' ' * 20 + 'Done!\n2 instance(s) saved.\n2 instance(s) processed.\n'
    )


def test_dump_default_file_name_is_cqrs_id(tmp_path, monkeypatch):
    """Without ``--output`` the dump goes to ``<cqrs_id>.dump`` in the working directory."""
    monkeypatch.chdir(tmp_path)
    parents(1)
    run('cqrs_bulk_dump', '-c', 'golden_parent')
    assert (tmp_path / 'golden_parent.dump').read_text().startswith('golden_parent\n')


def test_dump_refuses_an_existing_file_unless_forced(tmp_path):
    """An existing file is an error (``File <name> exists!``); ``--force`` overwrites it."""
    parents(1)
    target = tmp_path / 'x.dump'
    target.write_text('old')
    with pytest.raises(CommandError, match=f'^File {target} exists!$'):
        run('cqrs_bulk_dump', '-c', 'golden_parent', '-o', str(target))
    assert target.read_text() == 'old'
    run('cqrs_bulk_dump', '-c', 'golden_parent', '-o', str(target), '--force')
    assert target.read_text().startswith('golden_parent\n')
    run('cqrs_bulk_dump', '-c', 'golden_parent', '-o', str(target), '-f')


def test_dump_wrong_cqrs_id(tmp_path):
    """A CQRS_ID that is not a master model: ``Wrong CQRS ID: <id>!`` and no file."""
    with pytest.raises(CommandError, match='^Wrong CQRS ID: golden_nope!$'):
        run('cqrs_bulk_dump', '-c', 'golden_nope', '-o', str(tmp_path / 'n.dump'))
    assert not (tmp_path / 'n.dump').exists()


def test_dump_rejects_a_batch_that_is_not_positive():
    """``--batch 0`` is refused by the argument parser (the original hit an assert)."""
    with pytest.raises(CommandError, match='batch'):
        run('cqrs_bulk_dump', '-c', 'golden_parent', '-o', '-', '-b', '0')


def test_dump_pages_by_pk_and_sees_every_row_once():
    """Batches page by primary key: every row once, in pk order, whatever the batch size."""
    for pk in (5, 1, 9, 3, 7, 2):
        GoldenParent.objects.create(id=pk, name='p')
    out, _ = run('cqrs_bulk_dump', '-c', 'golden_parent', '-o', '-', '-b', '4')
    assert [r['id'] for r in dump_lines(out)[1]] == [1, 2, 3, 5, 7, 9]


def test_dump_uuid_and_custom_pk_models():
    """UUID pks dump as strings; a CharField pk named ``code`` dumps in pk order."""
    uid = uuid.UUID('aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee')
    GoldenUUID.objects.create(id=uid, name='u')
    CustomPK.objects.create(code='b', name='B')
    CustomPK.objects.create(code='a', name='A')
    out, _ = run('cqrs_bulk_dump', '-c', 'golden_uuid', '-o', '-')
    assert dump_lines(out)[1][0]['id'] == str(uid)
    out, _ = run('cqrs_bulk_dump', '-c', 'custom_pk', '-o', '-', '-b', '1')
    assert [r['code'] for r in dump_lines(out)[1]] == ['a', 'b']


def test_dump_serializer_model_needs_no_query_per_row():
    """Serializer models are serialized from the batch: the query count does not grow per row."""
    GoldenParent.objects.create(id=1, name='P')
    for n in range(30):
        GoldenSerialized.objects.create(
            name=f's{n}', price=Decimal('1.5'), happened=NOW, parent_id=1
        )
    with CaptureQueriesContext(connection) as queries:
        out, err = run('cqrs_bulk_dump', '-c', 'golden_serialized', '-o', '-', '-b', '10')
    assert len(queries) <= 6, [q['sql'] for q in queries]
    rows = dump_lines(out)[1]
    assert len(rows) == 30 and rows[0]['parent_name'] == 'P'
    assert rows[0]['price'] == '1.500'
    assert err.endswith('30 instance(s) saved.\n30 instance(s) processed.\n')


def test_dump_reports_a_row_that_cannot_be_serialized(monkeypatch):
    """A row whose serialization fails is reported with its pk and left out of the counts."""
    parents(2)
    from dj_cqrs import wire

    real = wire.dumps

    def flaky(data):
        if data.get('id') == 2:
            raise ValueError('boom')
        return real(data)

    monkeypatch.setattr(wire, 'dumps', flaky)
    out, err = run('cqrs_bulk_dump', '-c', 'golden_parent', '-o', '-')
    assert len(dump_lines(out)[1]) == 1
    assert '\nDump record failed for pk=2: ValueError: boom\n' in err
    assert err.endswith('Done!\n1 instance(s) saved.\n2 instance(s) processed.\n')


# ------------------------------------------------------------------------------------ load


def test_load_from_file_creates_replica_rows(tmp_path):
    """A dump file loads into the replica with every value, and says how many loaded."""
    source = tmp_path / 'p.dump'
    source.write_text('golden_parent\n' + line(1, 2, 'one') + '\n' + line(2, 0, 'two'))
    _, err = run('cqrs_bulk_load', '-i', str(source))
    assert err == 'Done!\n2 instance(s) loaded.\n'
    rows = list(
        GoldenParentReplica.objects.order_by('id').values_list('id', 'name', 'cqrs_revision')
    )
    assert rows == [(1, 'one', 2), (2, 'two', 0)]
    assert GoldenParentReplica.objects.get(id=1).cqrs_updated == NOW


def test_load_from_stdin():
    """``-i -`` reads the dump from stdin."""
    _, err = run('cqrs_bulk_load', '-i', '-', stdin='golden_parent\n' + line(7) + '\n')
    assert err == 'Done!\n1 instance(s) loaded.\n'
    assert GoldenParentReplica.objects.filter(id=7).exists()


@pytest.mark.parametrize(
    ('content', 'message'),
    [
        (None, "File {path} doesn't exist!"),
        ('', 'File {path} is empty!'),
        ('\n' + line(1), 'File {path} is empty!'),
        ('golden_nope\n' + line(1), 'Wrong CQRS ID: golden_nope!'),
    ],
)
def test_load_bad_files(tmp_path, content, message):
    """Missing, empty and wrong-id files stop with the original's message and load nothing."""
    path = tmp_path / 'in.dump'
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError) as raised:
        run('cqrs_bulk_load', '-i', str(path))
    assert str(raised.value) == message.format(path=path)
    assert not GoldenParentReplica.objects.exists()


def test_load_isolates_bad_lines_and_counts_truly(cqrs_log):
    """Unparseable, incomplete and failing lines are reported by number; the others are kept."""
    text = '\n'.join(
        [
            'golden_parent',
            '{not json',
            json.dumps({'id': 2, 'name': 'no revision'}),
            line(3, 0, 'ok'),
            '',
            line(5, 0, 'x' * 500),  # too long for PostgreSQL's varchar(100); SQLite accepts it
            line(6, 0, 'ok too'),
        ]
    )
    _, err = run('cqrs_bulk_load', '-i', '-', '-b', '10', stdin=text)
    assert "Dump file can't be parsed: line 2!\n" in err
    assert "Instance can't be saved: line 3!\n" in err
    assert "Dump file can't be parsed: line 5!\n" in err
    loaded = set(GoldenParentReplica.objects.values_list('id', flat=True))
    assert {3, 6} <= loaded
    assert err.endswith(f'Done!\n{len(loaded)} instance(s) loaded.\n')
    assert 'ERROR CQRS sync fields are not provided in data (golden_parent).' in cqrs_log()


def test_load_a_failing_row_does_not_roll_back_its_batch():
    """A row that fails in the database is rolled back alone: the rest of its batch stays."""
    rows = [
        line(1, 0, 'a'),
        line(2, 0, 'b'),
        json.dumps({'id': 3, 'name': None, 'cqrs_revision': 0, 'cqrs_updated': str(NOW)}),
        line(4, 0, 'd'),
    ]
    _, err = run('cqrs_bulk_load', '-i', '-', stdin='golden_parent\n' + '\n'.join(rows))
    assert 'line 4!' in err
    assert sorted(GoldenParentReplica.objects.values_list('id', flat=True)) == [1, 2, 4]
    assert err.endswith('Done!\n3 instance(s) loaded.\n')


def test_load_applies_revision_rules(cqrs_log):
    """Reloading skips duplicates and older revisions with the replica's log lines; newer wins."""
    GoldenParentReplica.objects.create(id=1, name='old', cqrs_revision=1, cqrs_updated=NOW)
    GoldenParentReplica.objects.create(id=2, name='same', cqrs_revision=0, cqrs_updated=NOW)
    GoldenParentReplica.objects.create(id=3, name='newer', cqrs_revision=5, cqrs_updated=NOW)
    text = '\n'.join(['golden_parent', line(1, 2, 'new'), line(2, 0, 'dup'), line(3, 4, 'late')])
    _, err = run('cqrs_bulk_load', '-i', '-', stdin=text)
    names = dict(GoldenParentReplica.objects.values_list('id', 'name'))
    assert names == {1: 'new', 2: 'same', 3: 'newer'}
    log = cqrs_log()
    assert 'ERROR Received duplicate CQRS data: pk = 2, cqrs_revision = 0 (golden_parent).' in log
    assert 'WARNING CQRS potential creation race condition: pk = 2 (golden_parent).' in log
    assert (
        'ERROR Wrong CQRS sync order: pk = 3, cqrs_revision = new 4 / existing 5 (golden_parent).'
        in log
    )
    assert err == 'Done!\n3 instance(s) loaded.\n'


def test_load_same_row_twice_in_one_batch_keeps_the_later_revision():
    """Two lines for one pk in a batch apply in file order (the later revision wins)."""
    text = '\n'.join(['golden_parent', line(1, 0, 'first'), line(1, 1, 'second')])
    _, err = run('cqrs_bulk_load', '-i', '-', stdin=text)
    assert GoldenParentReplica.objects.get(id=1).name == 'second'
    assert err == 'Done!\n2 instance(s) loaded.\n'


@pytest.mark.parametrize(
    ('flag', 'cleared'),
    [
        (['--clear'], True),
        (['-c'], True),
        (['--clear=true'], True),
        (['--clear', '1'], True),
        (['--clear=false'], False),
        (['-c', '0'], False),
        ([], False),
    ],
)
def test_load_clear_is_a_real_boolean(flag, cleared):
    """``--clear`` deletes the rows first; ``--clear=false`` (True in the original) does not."""
    GoldenParentReplica.objects.create(id=99, name='stale', cqrs_revision=0, cqrs_updated=NOW)
    run('cqrs_bulk_load', '-i', '-', *flag, stdin='golden_parent\n' + line(1))
    assert GoldenParentReplica.objects.filter(id=99).exists() is not cleared
    assert GoldenParentReplica.objects.filter(id=1).exists()


@pytest.mark.parametrize(('value', 'cleared'), [(True, True), ('false', False), ('yes', True)])
def test_load_clear_keyword_of_call_command_is_a_boolean_too(value, cleared):
    """``call_command(..., clear='false')`` does not clear (kwargs skip the parser)."""
    GoldenParentReplica.objects.create(id=99, name='stale', cqrs_revision=0, cqrs_updated=NOW)
    run('cqrs_bulk_load', input='-', clear=value, stdin='golden_parent\n' + line(1))
    assert GoldenParentReplica.objects.filter(id=99).exists() is not cleared


def test_load_clear_failure_stops_with_the_original_message(monkeypatch):
    """A database error while clearing: ``Delete operation fails!`` and nothing loads."""
    from django.db import DatabaseError

    from dj_cqrs.management import bulk_load

    def broken(model):
        raise DatabaseError('locked')

    monkeypatch.setattr('dj_cqrs.management.commands.cqrs_bulk_load.clear', broken)
    assert bulk_load.clear is not broken
    with pytest.raises(CommandError, match='^Delete operation fails!$'):
        run('cqrs_bulk_load', '-i', '-', '--clear', stdin='golden_parent\n' + line(1))
    assert not GoldenParentReplica.objects.exists()


def test_load_uuid_and_custom_pk_models():
    """UUID pks (as strings) and a pk named ``code`` load and reload under the revision rules."""
    uid = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee'
    text = 'golden_uuid\n' + json.dumps(
        {'id': uid, 'name': 'u', 'cqrs_revision': 1, 'cqrs_updated': str(NOW)}
    )
    run('cqrs_bulk_load', '-i', '-', stdin=text)
    _, err = run('cqrs_bulk_load', '-i', '-', stdin=text.replace('"u"', '"u2"'))
    assert GoldenUUIDReplica.objects.get(id=uuid.UUID(uid)).name == 'u'
    assert err == 'Done!\n1 instance(s) loaded.\n'
    text = 'custom_pk\n' + json.dumps(
        {'code': 'k-1', 'name': 'K', 'cqrs_revision': 0, 'cqrs_updated': str(NOW)}
    )
    run('cqrs_bulk_load', '-i', '-', stdin=text)
    assert CustomPKReplica.objects.get(code='k-1').name == 'K'


def test_load_model_with_custom_hooks_goes_through_them():
    """A replica with its own ``cqrs_create`` is loaded through that hook, row by row."""
    text = 'golden_fields\n' + json.dumps(
        {'id': 1, 'title': 'T', 'amount': 3, 'cqrs_revision': 0, 'cqrs_updated': str(NOW)}
    )
    run('cqrs_bulk_load', '-i', '-', stdin=text)
    row = GoldenFieldsReplica.objects.get(id=1)
    assert (row.title, row.last_sync) == ('T', False)


def test_load_writes_in_batches():
    """New rows are written with one INSERT per batch, not one per row."""
    text = 'golden_parent\n' + '\n'.join(line(pk) for pk in range(1, 201))
    with CaptureQueriesContext(connection) as queries:
        _, err = run('cqrs_bulk_load', '-i', '-', '-b', '100', stdin=text)
    inserts = [q for q in queries if q['sql'].startswith('INSERT')]
    assert len(inserts) <= 4
    assert len(queries) < 30
    assert GoldenParentReplica.objects.count() == 200
    assert err == 'Done!\n200 instance(s) loaded.\n'


def test_load_library_reports_applied_skipped_and_failed_lines():
    """The library result separates applied, skipped (revision rules) and failed line numbers."""
    GoldenParentReplica.objects.create(id=1, name='x', cqrs_revision=3, cqrs_updated=NOW)
    messages = []
    result = load(
        GoldenParentReplica,
        [line(1, 3), line(2), 'oops', line(3)],
        write_err=messages.append,
    )
    assert (result.applied, result.skipped, result.failed, result.loaded) == (2, 1, [4], 3)
    assert messages == ["Dump file can't be parsed: line 4!\n"]


def test_dump_lines_equal_the_messages_instance_data():
    """Each dumped line is exactly ``to_cqrs_dict`` of the row, for every field type."""
    from dj_cqrs import wire
    from tests.dj_master.models import GoldenBasic

    GoldenParent.objects.create(id=1, name='P')
    for n in range(3):
        GoldenBasic.objects.create(
            char=f'c/ü{n}',
            text='Line1\nLine2',
            flag=bool(n),
            integer=n,
            big=9007199254740993,
            amount=Decimal('12.30'),
            ratio=1e-7,
            day=datetime.date(2024, 2, 29),
            moment=NOW,
            uid=uuid.uuid4(),
            payload={'z': 1, 'a': [1, 2.5, None]},
            optional=None if n else 'x',
            parent_id=1 if n else None,
        )
    out, _ = run('cqrs_bulk_dump', '-c', 'golden_basic', '-o', '-', '-b', '2')
    expected = [wire.dumps(row.to_cqrs_dict()) for row in GoldenBasic.objects.order_by('pk')]
    assert out.split('\n')[1:] == expected
    assert '"amount":12.30' in out


def test_load_big_batch_reads_existing_rows_in_chunks():
    """A batch larger than one ``IN`` query's limit is read in chunks; reloads skip every row."""
    lines = [line(pk) for pk in range(1, 2001)]
    first = load(GoldenParentReplica, lines, batch_size=2000, write_err=print)
    again = load(GoldenParentReplica, lines, batch_size=2000, write_err=print)
    assert (first.applied, first.skipped) == (2000, 0)
    assert (again.applied, again.skipped, again.failed) == (0, 2000, [])
    assert GoldenParentReplica.objects.count() == 2000


def test_load_respects_tombstones_of_deleted_rows(cqrs_log):
    """A dump line older than a delete the replica applied does not bring the row back."""
    from dj_cqrs.models import Tombstone

    Tombstone.objects.create(
        cqrs_id='golden_parent', instance_pk='5', cqrs_revision=3, deleted_at=NOW
    )
    text = '\n'.join(['golden_parent', line(5, 2, 'old'), line(6, 0, 'new')])
    _, err = run('cqrs_bulk_load', '-i', '-', stdin=text)
    assert sorted(GoldenParentReplica.objects.values_list('id', flat=True)) == [6]
    assert any('CQRS deleted data is not restored: pk = 5' in entry for entry in cqrs_log())
    assert err == 'Done!\n2 instance(s) loaded.\n'
