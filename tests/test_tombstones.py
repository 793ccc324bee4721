"""Revision-guarded deletes on the replica: tombstones stop resurrections and stale deletes."""

from __future__ import annotations

import datetime
import random

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from dj_cqrs.consumer import handler
from dj_cqrs.models import Tombstone
from dj_cqrs.replica import tombstones
from dj_cqrs.transport import InProcessTransport
from tests.dj_master.models import GoldenParent
from tests.dj_replica.models import GoldenParentReplica
from tests.parent_bodies import T0, at, deliver
from tests.parent_bodies import parent_body as message
from tests.parent_bodies import parents as rows

pytestmark = pytest.mark.django_db(transaction=True)

def test_late_save_after_delete_does_not_resurrect(cqrs_log):
    """A SAVE older than the DELETE that removed the row is acked and ignored, with a log line."""
    actions = deliver(
        message('SAVE', 1, 0, at(0)),
        message('SAVE', 1, 1, at(1)),
        message('DELETE', 1, 2, at(2)),
        message('SAVE', 1, 1, at(1), 'late'),
    )
    assert actions == [handler.Action.ACK] * 4
    assert rows() == {}
    assert (
        'WARNING CQRS deleted data is not restored: pk = 1, cqrs_revision = new 1 / deleted 2 '
        '(golden_parent).' in cqrs_log()
    )


def test_delete_arriving_before_the_create_leaves_no_row():
    """DELETE first (row never seen), then the row's late SAVEs: the row is never created."""
    deliver(
        message('DELETE', 1, 2, at(2)), message('SAVE', 1, 0, at(0)), message('SAVE', 1, 1, at(1))
    )
    assert rows() == {}
    assert Tombstone.objects.get().cqrs_revision == 2


def test_late_delete_does_not_remove_a_newer_revision(cqrs_log):
    """A DELETE whose revision is not above the row's leaves the row in place."""
    deliver(message('SAVE', 1, 3, at(3), 'newer'), message('DELETE', 1, 2, at(2)))
    assert rows() == {1: ('newer', 3)}
    assert not Tombstone.objects.exists()
    assert (
        'WARNING CQRS delete is older than the row, the row is kept: pk = 1, '
        'cqrs_revision = delete 2 / existing 3 (golden_parent).' in cqrs_log()
    )


def test_row_created_again_on_the_master_is_created_and_survives_the_late_delete():
    """After a delete, the master's new row (revision 0, later time) appears; a replayed DELETE
    of the old row does not remove it."""
    deliver(
        message('SAVE', 1, 0, at(0)),
        message('DELETE', 1, 1, at(1)),
        message('SAVE', 1, 0, at(5), 'again'),
        message('DELETE', 1, 1, at(1)),
    )
    assert rows() == {1: ('again', 0)}
    assert not Tombstone.objects.exists()


def test_newer_delete_replaces_the_tombstone():
    """Deleting a row again keeps the most recent delete in its tombstone."""
    deliver(message('DELETE', 1, 4, at(4)), message('DELETE', 1, 2, at(2)))
    assert Tombstone.objects.get().cqrs_revision == 4
    deliver(message('SAVE', 1, 0, at(6)), message('DELETE', 1, 1, at(7)))
    assert (Tombstone.objects.get().cqrs_revision, Tombstone.objects.get().deleted_at) == (
        1,
        T0 + datetime.timedelta(seconds=7),
    )


def test_master_delete_replayed_in_any_order_never_resurrects():
    """Every order of a row's create, updates and delete from a real master ends with no row."""
    InProcessTransport.apply = False
    parent = GoldenParent.objects.create(id=1, name='a')
    for name in 'bcd':
        parent.name = name
        parent.save()
    parent.delete()
    bodies = [d.body for d in InProcessTransport.published]
    assert len(bodies) == 5
    shuffler = random.Random(7)
    for _ in range(10):
        GoldenParentReplica.objects.all().delete()
        Tombstone.objects.all().delete()
        order = bodies[:]
        shuffler.shuffle(order)
        deliver(*order)
        assert rows() == {}


@override_settings(
    CQRS={
        'transport': 'dj_cqrs.transport.InProcessTransport',
        'queue': 'replica',
        'replica': {'CQRS_TOMBSTONE_TTL': 3600},
    }
)
def test_prune_removes_only_tombstones_older_than_the_ttl(capsys):
    """``cqrs_prune_tombstones`` deletes tombstones past CQRS_TOMBSTONE_TTL and keeps the rest."""
    now = timezone.now()
    Tombstone.objects.create(
        cqrs_id='golden_parent',
        instance_pk='1',
        cqrs_revision=1,
        deleted_at=now - datetime.timedelta(hours=2),
    )
    Tombstone.objects.create(
        cqrs_id='golden_parent',
        instance_pk='2',
        cqrs_revision=1,
        deleted_at=now - datetime.timedelta(minutes=10),
    )
    call_command('cqrs_prune_tombstones')
    assert capsys.readouterr().out == '1 tombstone(s) deleted.\n'
    assert list(Tombstone.objects.values_list('instance_pk', flat=True)) == ['2']
    assert tombstones.prune(60) == 1


@override_settings(
    CQRS={
        'transport': 'dj_cqrs.transport.InProcessTransport',
        'queue': 'replica',
        'replica': {'CQRS_TOMBSTONE_TTL': None},
    }
)
def test_ttl_none_keeps_tombstones():
    """With CQRS_TOMBSTONE_TTL = None nothing is pruned."""
    Tombstone.objects.create(
        cqrs_id='golden_parent', instance_pk='1', cqrs_revision=1, deleted_at=T0
    )
    assert tombstones.prune() == 0
    assert Tombstone.objects.count() == 1
