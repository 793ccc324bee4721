"""``cqrs_sync`` through ``call_command``: what is published, where, and what is printed."""

from __future__ import annotations

import datetime
import io
import uuid
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext

from dj_cqrs.transport import InProcessTransport
from tests.dj_master.models import CustomPK, Filtered, GoldenParent, GoldenSerialized, GoldenUUID
from tests.dj_replica.models import GoldenParentReplica

# Not transactional (fast on PostgreSQL): on-commit publishing runs at the end of each step.
pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


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


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    with committed():
        call_command('cqrs_sync', *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def sent(published):
    return [(key, body['signal_type'], body['instance_pk']) for key, body in published()]


@pytest.fixture
def three_parents():
    with committed():
        for pk in (1, 2, 3):
            GoldenParent.objects.create(id=pk, name=f'p{pk}')
    InProcessTransport.reset()


def test_sync_all_rows_broadcasts_sync_messages(three_parents, published):
    """``-f '{}'`` sends one SYNC per row to every replica and prints the original's summary."""
    out, err = run('--cqrs-id=golden_parent', '-f={}')
    assert out == 'Done!\n3 instance(s) synced.\n3 instance(s) processed.\n'
    assert sent(published) == [('golden_parent', 'SYNC', pk) for pk in (1, 2, 3)]


@pytest.mark.django_db(transaction=True)
def test_sync_to_one_queue_routes_to_that_replica(three_parents, published):
    """``-q`` sends direct SYNCs to ``cqrs.<queue>.<cqrs_id>``; the replica applies them."""
    GoldenParentReplica.objects.all().delete()
    run('-cid', 'golden_parent', '-f', '{}', '-q', 'replica')
    assert sent(published) == [('cqrs.replica.golden_parent', 'SYNC', pk) for pk in (1, 2, 3)]
    assert GoldenParentReplica.objects.count() == 3


def test_sync_filter_selects_rows(three_parents, published):
    """``--filter`` is a JSON object of queryset kwargs."""
    out, _ = run('--cqrs-id', 'golden_parent', '--filter', '{"id__in": [1, 3]}')
    assert out.endswith('2 instance(s) synced.\n2 instance(s) processed.\n')
    assert [pk for _, _, pk in sent(published)] == [1, 3]


def test_sync_progress_lines(three_parents):
    """``-b 1 --progress`` prints the processing line and one progress line per batch."""
    out, _ = run('--cqrs-id=golden_parent', '-f={}', '-b', '1', '--progress')
    assert out.startswith('Processing 3 records with batch size 1\n\r1 of 3 processed - 33% with ')
    assert '\r2 of 3 processed - 66% with rate ' in out
    assert out.endswith(' ' * 20 + 'Done!\n3 instance(s) synced.\n3 instance(s) processed.\n')
    out, _ = run('--cqrs-id=golden_parent', '-f={}', '-p')
    assert out.startswith('Processing 3 records with batch size 10000\n\r3 of 3 processed - 100%')


@pytest.mark.parametrize('args', [[], ['-f', '{"id": 123456}']])
def test_sync_no_rows(three_parents, published, args):
    """No filter selects nothing (the original's rule); a filter matching nothing says so."""
    out, _ = run('--cqrs-id=golden_parent', *args)
    assert out == 'No objects found for filter!\n'
    assert published() == []


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['--cqrs-id=golden_nope', '-f={}'], 'Wrong CQRS ID: golden_nope!'),
        (['--cqrs-id=golden_parent', '-f={bad'], 'Bad filter kwargs!'),
        (['--cqrs-id=golden_parent', '-f=[1, 2]'], 'Bad filter kwargs!'),
        (
            ['--cqrs-id=golden_parent', '-f={"nope": 1}'],
            "Bad filter kwargs! Cannot resolve keyword 'nope' into field. "
            'Choices are: cqrs_revision, cqrs_updated, goldenbasic, goldenserialized, id, name',
        ),
    ],
)
def test_sync_errors(three_parents, published, args, message):
    """Wrong ids and bad filters stop with the original's one-line message, nothing sent."""
    with pytest.raises(CommandError) as raised:
        run(*args)
    assert str(raised.value) == message
    assert published() == []


def test_sync_missing_cqrs_id_is_a_usage_error():
    """``--cqrs-id`` is required."""
    with pytest.raises(CommandError, match='--cqrs-id/-cid'):
        run('-f={}')


def test_sync_uuid_filter_and_custom_pk(published):
    """UUID pks and a CharField pk named ``code`` sync like any other model."""
    uid = uuid.UUID('00000000-0000-4000-8000-000000000002')
    with committed():
        GoldenUUID.objects.create(id=uid, name='uuid two')
        CustomPK.objects.create(code='c1', name='C')
    InProcessTransport.reset()
    out, _ = run('--cqrs-id=golden_uuid', '-f={"name": "uuid two"}')
    assert out == 'Done!\n1 instance(s) synced.\n1 instance(s) processed.\n'
    assert sent(published) == [('golden_uuid', 'SYNC', str(uid))]
    InProcessTransport.reset()
    run('--cqrs-id=custom_pk', '-f={"code": "c1"}', '-q', 'replica')
    ((key, body),) = published()
    assert key == 'cqrs.replica.custom_pk'
    assert (body['instance_pk'], body['instance_data']['name']) == ('c1', 'C')


def test_sync_counts_only_rows_really_published(published):
    """Rows ``is_sync_instance()`` filters out are processed but not counted as synced."""
    with committed():
        Filtered.objects.create(name='shown', public=True)
        Filtered.objects.create(name='hidden', public=False)
    InProcessTransport.reset()
    out, _ = run('--cqrs-id=filtered', '-f={}')
    assert out == 'Done!\n1 instance(s) synced.\n2 instance(s) processed.\n'
    assert len(published()) == 1


def test_sync_reports_a_failing_row_and_goes_on(three_parents, published, monkeypatch):
    """A row whose sync raises is reported with its pk; the other rows are still sent."""
    real = GoldenParent.cqrs_sync

    def flaky(self, *args, **kwargs):
        if self.pk == 2:
            raise RuntimeError('broker down')
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GoldenParent, 'cqrs_sync', flaky)
    out, _ = run('--cqrs-id=golden_parent', '-f={}')
    assert '\nSync record failed for pk=2: RuntimeError: broker down\n' in out
    assert out.endswith('Done!\n2 instance(s) synced.\n3 instance(s) processed.\n')
    assert [pk for _, _, pk in sent(published)] == [1, 3]


def test_sync_serializer_model_needs_no_query_per_row(published):
    """Serializer models are synced from the batch read: queries do not grow with rows."""
    GoldenParent.objects.create(id=1, name='P')
    for n in range(20):
        GoldenSerialized.objects.create(
            name=f's{n}', price=Decimal('2.5'), happened=NOW, parent_id=1
        )
    InProcessTransport.apply = False
    InProcessTransport.reset()
    with CaptureQueriesContext(connection) as queries:
        out, _ = run('--cqrs-id=golden_serialized', '-f={}', '-b', '10')
    assert out.endswith('20 instance(s) synced.\n20 instance(s) processed.\n')
    assert len(queries) <= 6, [q['sql'] for q in queries]
    assert published()[0][1]['instance_data']['parent_name'] == 'P'
