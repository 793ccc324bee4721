"""``Model.cqrs_save()``/``cqrs_delete()`` called by user code outside a transaction (A4).

The original runs them in autocommit mode and they work on every database. Ours lock rows
(``SELECT ... FOR UPDATE``), which PostgreSQL and MySQL refuse outside a transaction, so the
calls must open one of their own. Run with ``DB=postgres`` to see the difference.
"""

from __future__ import annotations

import datetime

import pytest
from django.db import connection

from dj_cqrs.models import Tombstone
from tests.dj_replica.models import GoldenFieldsReplica, GoldenParentReplica, StampedReplica

pytestmark = pytest.mark.django_db(transaction=True)

# Recent master times: a delete older than CQRS_TOMBSTONE_TTL is pruned by the first delete a
# process records, so a fixed past date made the tombstone test depend on the test order.
_NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
UPDATED = str(_NOW - datetime.timedelta(seconds=5))
LATER = str(_NOW)


@pytest.fixture(autouse=True)
def _autocommit():
    assert not connection.in_atomic_block  # the point of these tests: no caller transaction


def test_direct_delete_outside_a_transaction_deletes_and_leaves_a_tombstone():
    """cqrs_delete() in autocommit mode removes the row (it used to log an error and keep it)."""
    GoldenParentReplica.objects.create(id=1, name='a', cqrs_revision=0, cqrs_updated=UPDATED)
    assert GoldenParentReplica.cqrs_delete({'id': 1, 'cqrs_revision': 1, 'cqrs_updated': LATER})
    assert not GoldenParentReplica.objects.exists()
    assert Tombstone.objects.get(cqrs_id='golden_parent').cqrs_revision == 1


def test_direct_save_of_a_replica_with_hooks_outside_a_transaction():
    """cqrs_save() of a replica with its own hooks (row lock) creates, then updates."""
    data = {'id': 1, 'title': 'a', 'amount': 1, 'cqrs_revision': 0, 'cqrs_updated': UPDATED}
    assert GoldenFieldsReplica.cqrs_save(data)
    assert GoldenFieldsReplica.cqrs_save({**data, 'title': 'b', 'cqrs_revision': 1})
    row = GoldenFieldsReplica.objects.get(id=1)
    assert (row.title, row.cqrs_revision) == ('b', 1)


def test_direct_save_of_a_row_locked_plain_replica_outside_a_transaction():
    """A replica updated through save() (a field computes its value) works the same way."""
    data = {'id': 1, 'name': 'a', 'cqrs_revision': 0, 'cqrs_updated': UPDATED}
    assert StampedReplica.cqrs_save(data)
    assert StampedReplica.cqrs_save({**data, 'name': 'b', 'cqrs_revision': 1})
    assert StampedReplica.objects.get(id=1).stamp == 'b@1'


def test_failed_direct_save_writes_nothing():
    """A save that reports failure (missing required field) leaves no row behind."""
    assert not GoldenFieldsReplica.cqrs_save({'id': 1, 'cqrs_revision': 0, 'cqrs_updated': UPDATED})
    assert not GoldenFieldsReplica.objects.exists()
