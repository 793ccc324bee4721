"""DELETEs made through stale master objects, and deletes that commit whole (issue 12, A2/B5).

django-cqrs 3.1 sends a DELETE with the deleted *object's* revision + 1 and the master's
``now()``. When the object was loaded before another request updated the row, that revision
equals the row's revision on the replica, or is below it. The replica must still delete the
row (the DELETE is newer by the master's clock), yet a late DELETE must never remove a row the
master created again after it. Our master sends a revision above the row's committed revision
whatever object performs the delete.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest
from django.db import DataError, connection

from dj_cqrs.consumer.handler import Action
from dj_cqrs.models import Tombstone
from dj_cqrs.replica import tombstones
from dj_cqrs.wire import encode_body
from tests import golden
from tests.dj_master.models import GoldenParent
from tests.dj_replica.models import GoldenBasicReplica, GoldenParentReplica
from tests.parent_bodies import T0, at, deliver, parent_body, parents

pytestmark = pytest.mark.django_db(transaction=True)

# --- our master ---------------------------------------------------------------------------


def test_delete_through_a_stale_object_removes_the_replica_row(published):
    """Loaded at r0, row updated elsewhere to r1, then the old object deleted: DELETE r2."""
    GoldenParent.objects.create(id=1, name='a')
    stale = GoldenParent.objects.get(id=1)
    other = GoldenParent.objects.get(id=1)
    other.name = 'b'
    other.save()
    assert parents() == {1: ('b', 1)}
    stale.delete()
    delete = published()[-1][1]
    assert (delete['signal_type'], delete['instance_data']['cqrs_revision']) == ('DELETE', 2)
    assert parents() == {}


def test_queryset_delete_after_updates_carries_the_next_revision(published):
    """A queryset delete publishes each row's committed revision + 1."""
    obj = GoldenParent.objects.create(id=1, name='a')
    GoldenParent.objects.create(id=2, name='x')
    for name in 'bc':
        obj.name = name
        obj.save()
    GoldenParent.objects.all().delete()
    deletes = {
        b['instance_pk']: b['instance_data']['cqrs_revision']
        for _, b in published()
        if b['signal_type'] == 'DELETE'
    }
    assert deletes == {1: 3, 2: 1}
    assert parents() == {}


# --- a master on django-cqrs 3.1 (golden bodies) ------------------------------------------


def golden_body(name: str, **changes: Any) -> bytes:
    message = copy.deepcopy(golden.messages(name)[0]['body_json'])
    message['expires'] = None  # the captured bodies have expired since
    message['instance_data'].update(changes)
    return encode_body(message)


def test_original_stale_delete_with_the_rows_revision_deletes():
    """Golden DELETE (object revision 0 + 1) after the row reached revision 1 elsewhere."""
    deliver(
        golden_body('create_basic2'),
        golden_body('create_basic2', cqrs_revision=1, cqrs_updated='2026-11-26 14:52:00+00:00'),
        routing_key='golden_basic',
    )
    assert GoldenBasicReplica.objects.get(id=2).cqrs_revision == 1
    assert deliver(golden_body('delete_basic'), routing_key='golden_basic') == [Action.ACK]
    assert not GoldenBasicReplica.objects.filter(id=2).exists()
    assert Tombstone.objects.get(cqrs_id='golden_basic').cqrs_revision == 1


def test_original_stale_delete_below_the_rows_revision_deletes_by_time():
    """Golden DELETE revision 2 (14:52:23) of a row at revision 3 changed at 14:52:10."""
    deliver(parent_body('SAVE', 11, 3, '2026-11-26 14:52:10+00:00'))
    assert deliver(golden_body('queryset_delete_parent')) == [Action.ACK]
    assert parents() == {}


def test_late_save_after_a_stale_delete_does_not_bring_the_row_back(cqrs_log):
    """The row's r2 SAVE (changed before the delete) arrives after the stale DELETE r1."""
    deliver(
        parent_body('SAVE', 1, 0, at(0)),
        parent_body('SAVE', 1, 1, at(1)),
        parent_body('DELETE', 1, 1, at(3)),
        parent_body('SAVE', 1, 2, at(2), 'late'),
    )
    assert parents() == {}
    assert (
        'WARNING CQRS deleted data is not restored: pk = 1, cqrs_revision = new 2 / deleted 1 '
        '(golden_parent).' in cqrs_log()
    )


def test_late_delete_with_the_rows_revision_keeps_a_row_created_again():
    """Deleted at r1, created again (r0, later) and updated to r1: the replayed DELETE r1
    (older than the new row) keeps it."""
    deliver(
        parent_body('SAVE', 1, 0, at(0)),
        parent_body('DELETE', 1, 1, at(1)),
        parent_body('SAVE', 1, 0, at(5), 'again'),
        parent_body('SAVE', 1, 1, at(6), 'again2'),
        parent_body('DELETE', 1, 1, at(1)),
    )
    assert parents() == {1: ('again2', 1)}


# --- a delete and its tombstone commit together (B5) ---------------------------------------


@pytest.mark.parametrize('revision', ['9', None, 1.5, True, [1]])
def test_delete_without_a_usable_revision_is_refused_and_keeps_the_row(revision, cqrs_log):
    """No unchecked delete: the row stays, no tombstone, one error line, a falsy result."""
    deliver(parent_body('SAVE', 1, 3, at(0)))
    data = {'id': 1, 'cqrs_revision': revision, 'cqrs_updated': at(9)}
    assert not GoldenParentReplica.cqrs_delete(data)
    assert parents() == {1: ('n', 3)}
    assert not Tombstone.objects.exists()
    assert [line for line in cqrs_log() if 'CQRS delete is not applied' in line] == [
        f'ERROR CQRS delete is not applied, pk or cqrs_revision is not usable: '
        f'pk = 1, cqrs_revision = {revision!r} (golden_parent).'
    ]


def test_failed_tombstone_write_rolls_the_delete_back(monkeypatch, cqrs_log):
    """The tombstone cannot be written: the row is not deleted and the message fails."""
    deliver(parent_body('SAVE', 1, 0, at(0)))

    def fail(*args: Any, **kwargs: Any) -> None:
        raise DataError('tombstone write failed')

    monkeypatch.setattr(tombstones, 'record', fail)
    assert deliver(parent_body('DELETE', 1, 1, at(1))) == [Action.RETRY]
    assert parents() == {1: ('n', 0)}
    assert 'ERROR tombstone write failed\nCQRS delete error: pk = 1 (golden_parent).' in cqrs_log()


def test_revision_beyond_the_revision_column_is_dead_lettered_and_keeps_the_row():
    """Revision 2^31 fits no revision or tombstone column (int4 on PostgreSQL, INT on MariaDB):
    the DELETE can never apply, so it goes to the dead letters at once, row kept."""
    deliver(parent_body('SAVE', 1, 0, at(0)))
    assert deliver(parent_body('DELETE', 1, 2**31, at(1))) == [Action.DEAD_LETTER]
    assert parents() == {1: ('n', 0)}
    assert not Tombstone.objects.exists()


def test_direct_delete_beyond_the_tombstone_column_keeps_the_row():
    """Called directly (no decode in front), revision 2^31 cannot be recorded on PostgreSQL or
    MariaDB, so the row is not deleted either: the delete and its tombstone commit together."""
    if connection.vendor not in ('postgresql', 'mysql'):
        pytest.skip(
            f'{connection.vendor} stores 2^31 in an integer column: no overflow '
            '(run with DB=postgres or DB=mariadb)'
        )
    deliver(parent_body('SAVE', 1, 0, at(0)))
    data = {'id': 1, 'cqrs_revision': 2**31, 'cqrs_updated': T0 + datetime.timedelta(seconds=1)}
    assert GoldenParentReplica.cqrs_delete(data) is False
    assert parents() == {1: ('n', 0)}
    assert not Tombstone.objects.exists()
