"""The diff and deleted-rows pipelines through ``call_command``, stage by stage."""

from __future__ import annotations

import io
import json
import re
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.test import TestCase

from dj_cqrs.transport import InProcessTransport
from tests.dj_master.models import CustomPK, Filtered, GoldenParent, GoldenUUID
from tests.dj_replica.models import CustomPKReplica, GoldenParentReplica, GoldenUUIDReplica

# Not transactional (fast on PostgreSQL): on-commit publishing runs at the end of each step.
pytestmark = pytest.mark.django_db

HEADER = re.compile(r'^golden_parent,\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+00:00$')


@pytest.fixture(autouse=True)
def _apply_only_when_transactional(request):
    """The in-process replica applies messages only in transactional tests.

    The consumer path calls ``close_old_connections()`` as a real worker does, which a test
    transaction on PostgreSQL does not survive; the other tests assert on published messages.
    """
    marker = request.node.get_closest_marker('django_db')
    InProcessTransport.apply = bool(marker and marker.kwargs.get('transaction'))


def committed():
    """Run the block's on-commit callbacks (publishing) at its end, as a commit would."""
    return TestCase.captureOnCommitCallbacks(execute=True)


def run(name, *args, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    options = {'stdin': io.StringIO(stdin)} if stdin is not None else {}
    with committed():
        call_command(name, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def parents():
    """Master parents 1..5 replicated, then the replica tampered: 2 missing, 4 stale, 9 extra."""
    apply = InProcessTransport.apply
    InProcessTransport.apply = False
    for pk in range(1, 6):
        parent = GoldenParent.objects.create(id=pk, name=f'p{pk}')
        GoldenParentReplica.objects.create(
            id=pk, name=parent.name, cqrs_revision=0, cqrs_updated=parent.cqrs_updated
        )
    InProcessTransport.apply = apply
    GoldenParentReplica.objects.filter(id=2).delete()
    GoldenParentReplica.objects.filter(id=4).update(cqrs_revision=99, name='stale')
    GoldenParentReplica.objects.create(
        id=9, name='gone', cqrs_revision=0, cqrs_updated='2024-01-01T00:00:00Z'
    )
    InProcessTransport.reset()


def test_diff_master_streams_pk_revision_pairs_per_batch(parents):
    """Header ``<cqrs_id>,<now>``, then ``[[pk,revision],...]`` per batch, in pk order."""
    out, err = run('cqrs_diff_master', '--cqrs-id=golden_parent', '--batch=2')
    head, *lines = out.splitlines()
    assert HEADER.match(head)
    assert lines == ['[[1,0],[2,0]]', '[[3,0],[4,0]]', '[[5,0]]']
    assert err == ''


def test_diff_master_filter_and_sync_instance_rule(parents):
    """``-f`` narrows the rows; rows ``is_sync_instance()`` rejects are left out (``[]`` kept)."""
    out, _ = run('cqrs_diff_master', '-cid', 'golden_parent', '-f', '{"id__in": [1, 5]}')
    assert out.splitlines()[1:] == ['[[1,0],[5,0]]']
    with committed():
        Filtered.objects.create(id=1, name='a', public=False)
        Filtered.objects.create(id=2, name='b', public=True)
    out, _ = run('cqrs_diff_master', '-cid', 'filtered', '-b', '1')
    assert out.splitlines()[1:] == ['[]', '[[2,0]]']


def test_diff_master_no_objects(parents):
    """A filter matching nothing: stderr ``No objects found for filter!`` and no stdout."""
    out, err = run('cqrs_diff_master', '--cqrs-id=golden_parent', '-f={"id": 123456}')
    assert (out, err) == ('', 'No objects found for filter!\n')


@pytest.mark.django_db(transaction=True)
def test_diff_pipeline_repairs_missing_and_stale_rows(parents, published):
    """master | replica | sync re-sends exactly the missing and stale rows to the replica queue."""
    stream, _ = run('cqrs_diff_master', '--cqrs-id=golden_parent', '-b', '2')
    diff, err = run('cqrs_diff_replica', stdin=stream)
    assert diff.splitlines()[0] == stream.splitlines()[0] + ',replica'
    assert diff.splitlines()[1:] == ['[2]', '[4]']
    assert err == 'PK to resync: {2}\nPK to resync: {4}\n'
    out, _ = run('cqrs_diff_sync', stdin=diff)
    assert out == (
        'Done!\n1 instance(s) synced.\n1 instance(s) processed.\n'
        'Done!\n1 instance(s) synced.\n1 instance(s) processed.\n'
    )
    assert [(k, b['signal_type'], b['instance_pk']) for k, b in published()] == [
        ('cqrs.replica.golden_parent', 'SYNC', 2),
        ('cqrs.replica.golden_parent', 'SYNC', 4),
    ]
    assert dict(GoldenParentReplica.objects.filter(id__in=[2, 4]).values_list('id', 'name')) == {
        2: 'p2',
        4: 'p4',
    }
    again, _ = run('cqrs_diff_replica', stdin=run('cqrs_diff_master', '-cid', 'golden_parent')[0])
    assert len(again.splitlines()) == 1


def test_diff_sync_without_queue_broadcasts(parents, published):
    """A header whose queue is ``None`` (or absent) broadcasts instead of failing every row."""
    for head in ('golden_parent,2024-01-01 00:00:00+00:00,None', 'golden_parent,2024-01-01'):
        InProcessTransport.reset()
        out, _ = run('cqrs_diff_sync', stdin=f'{head}\n[2, 4]\n')
        assert out == 'Done!\n2 instance(s) synced.\n2 instance(s) processed.\n'
        assert [key for key, _ in published()] == ['golden_parent', 'golden_parent']


def test_diff_sync_progress_and_empty_line(parents):
    """``-p -b 1`` prints progress per row; a ``[]`` line finds nothing."""
    out, _ = run('cqrs_diff_sync', '-p', '-b', '1', stdin='golden_parent,t,replica\n[1, 2]\n[]\n')
    assert out.startswith('Processing 2 records with batch size 1\n\r1 of 2 processed - 50% ')
    assert out.endswith('2 instance(s) processed.\nNo objects found for filter!\n')


@pytest.mark.django_db(transaction=True)
def test_diff_pipeline_uuid_and_custom_pk(published):
    """UUID pks travel as strings and a pk named ``code`` works through all three stages."""
    one = uuid.UUID('aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee')
    with committed():
        GoldenUUID.objects.create(id=one, name='u1')
        CustomPK.objects.create(code='a', name='A')
        CustomPK.objects.create(code='b', name='B')
    GoldenUUIDReplica.objects.all().delete()
    CustomPKReplica.objects.filter(code='b').delete()
    InProcessTransport.reset()

    stream, _ = run('cqrs_diff_master', '-cid', 'golden_uuid')
    assert stream.splitlines()[1] == f'[["{one}",0]]'
    diff, err = run('cqrs_diff_replica', stdin=stream)
    assert diff.splitlines()[1] == f'["{one}"]' and err == f"PK to resync: {{'{one}'}}\n"
    run('cqrs_diff_sync', stdin=diff)
    assert GoldenUUIDReplica.objects.get(id=one).name == 'u1'

    stream, _ = run('cqrs_diff_master', '-cid', 'custom_pk')
    assert stream.splitlines()[1] == '[["a",0],["b",0]]'
    diff, _ = run('cqrs_diff_replica', stdin=stream)
    assert diff.splitlines()[1:] == ['["b"]']
    run('cqrs_diff_sync', stdin=diff)
    assert CustomPKReplica.objects.get(code='b').name == 'B'


def test_deleted_pipeline_removes_rows_the_master_deleted(parents):
    """replica pks | master check | replica delete removes exactly the rows gone on the master."""
    stream, err = run('cqrs_deleted_diff_replica', '--cqrs-id=golden_parent', '--batch=2')
    head, *lines = stream.splitlines()
    assert HEADER.match(head) and err == ''
    assert lines == ['[1,3]', '[4,5]', '[9]']
    diff, err = run('cqrs_deleted_diff_master', stdin=stream)
    assert diff.splitlines() == [head, '[9]']
    assert err == 'PK to delete: [9]\n'
    out, err = run('cqrs_deleted_sync_replica', stdin=diff)
    assert (out, err) == ('', '')
    assert sorted(GoldenParentReplica.objects.values_list('id', flat=True)) == [1, 3, 4, 5]


def test_deleted_pipeline_uuid_and_filter(published):
    """UUID replica pks are streamed as strings; ``-f`` narrows the replica rows."""
    kept, gone = uuid.uuid4(), uuid.uuid4()
    master = GoldenUUID.objects.create(id=kept, name='kept')
    GoldenUUIDReplica.objects.create(
        id=kept, name='kept', cqrs_revision=0, cqrs_updated=master.cqrs_updated
    )
    GoldenUUIDReplica.objects.create(
        id=gone, name='x', cqrs_revision=0, cqrs_updated='2024-01-01T00:00:00Z'
    )
    stream, _ = run('cqrs_deleted_diff_replica', '-cid', 'golden_uuid')
    diff, err = run('cqrs_deleted_diff_master', stdin=stream)
    assert diff.splitlines()[1:] == [f'["{gone}"]'] and err == f"PK to delete: ['{gone}']\n"
    run('cqrs_deleted_sync_replica', stdin=diff)
    assert list(GoldenUUIDReplica.objects.values_list('id', flat=True)) == [kept]
    out, err = run('cqrs_deleted_diff_replica', '-cid', 'golden_uuid', '-f', '{"name": "none"}')
    assert (out, err) == ('', 'No objects found for filter!\n')


@pytest.mark.parametrize(
    ('name', 'args', 'stdin', 'message'),
    [
        ('cqrs_diff_master', ['--cqrs-id=golden_nope'], None, 'Wrong CQRS ID: golden_nope!'),
        ('cqrs_diff_master', ['-cid', 'golden_parent', '-f={bad'], None, 'Bad filter kwargs!'),
        ('cqrs_diff_replica', [], 'golden_nope,t\n[[1,1]]\n', 'Wrong CQRS ID: golden_nope!'),
        ('cqrs_diff_replica', [], '', 'Wrong CQRS ID: !'),
        ('cqrs_diff_replica', [], 'golden_parent,t\n{oops\n', "Diff line can't be parsed: line 2!"),
        ('cqrs_diff_sync', [], 'golden_nope,t,q\n[1]\n', 'Wrong CQRS ID: golden_nope!'),
        ('cqrs_deleted_diff_replica', ['-cid', 'golden_nope'], None, 'Wrong CQRS ID: golden_nope!'),
        (
            'cqrs_deleted_diff_replica',
            ['-cid', 'golden_parent', '-f={bad'],
            None,
            'Bad filter kwargs!',
        ),
        ('cqrs_deleted_diff_master', [], 'golden_nope,t\n[1]\n', 'Wrong CQRS ID: golden_nope!'),
        ('cqrs_deleted_sync_replica', [], 'golden_nope,t\n[1]\n', 'Wrong CQRS ID: golden_nope!'),
        (
            'cqrs_deleted_sync_replica',
            [],
            'golden_parent,t\n[1]\n"x"\n',
            "Diff line can't be parsed: line 3!",
        ),
    ],
)
def test_diff_errors(parents, name, args, stdin, message):
    """Wrong ids, bad filters and unparseable lines stop with a one-line message."""
    with pytest.raises(CommandError) as raised:
        run(name, *args, stdin=stdin)
    assert str(raised.value) == message


def test_diff_unknown_filter_field(parents):
    """An unknown filter field names Django's choices, like the original."""
    with pytest.raises(CommandError, match=r"^Bad filter kwargs! Cannot resolve keyword 'nope'"):
        run('cqrs_diff_master', '-cid', 'golden_parent', '-f', '{"nope": 1}')


def test_diff_replica_line_longer_than_one_in_query(parents):
    """A diff line of thousands of pairs is compared in chunks (no SQL parameter limit)."""
    pairs = [[pk, 0] for pk in range(1, 3001)]
    out, _ = run('cqrs_diff_replica', stdin='golden_parent,t\n' + json.dumps(pairs) + '\n')
    missing = json.loads(out.splitlines()[1])
    assert missing == [2, 4] + [pk for pk in range(6, 3001) if pk != 9]  # 9 is replica-only


@pytest.mark.parametrize(
    ('name', 'stdin'),
    [
        ('cqrs_diff_replica', 'golden_parent,t\n[[{"a": 1}, 0]]\n'),
        ('cqrs_diff_replica', 'golden_parent,t\n[["abc", 0]]\n'),
        ('cqrs_diff_replica', 'golden_parent,t\n[[1.5, 0]]\n'),
        ('cqrs_diff_sync', 'golden_parent,t,replica\n[{"a": 1}]\n'),
        ('cqrs_diff_sync', 'golden_parent,t,replica\n["abc"]\n'),
        ('cqrs_deleted_diff_master', 'golden_parent,t\n[{"a": 1}]\n'),
        ('cqrs_deleted_diff_master', 'golden_parent,t\n["abc"]\n'),
        ('cqrs_deleted_sync_replica', 'golden_parent,t\n[[1, 2]]\n'),
        ('cqrs_deleted_sync_replica', 'golden_parent,t\n["abc"]\n'),
    ],
)
def test_diff_pk_of_the_wrong_type_is_a_one_line_error(parents, name, stdin):
    """A dict, a list, a fraction or text where the pk is an integer stops the command with one
    line naming the value and the pk type (no traceback), and changes nothing."""
    before = sorted(GoldenParentReplica.objects.values_list('id', flat=True))
    with pytest.raises(CommandError) as raised:
        run(name, stdin=stdin)
    text = str(raised.value)
    assert text.startswith('Bad pk in diff stream: ') and '\n' not in text
    assert re.search(r'is not a valid pk of Golden\w+ \((Auto|Integer)Field\)!$', text), text
    assert sorted(GoldenParentReplica.objects.values_list('id', flat=True)) == before
