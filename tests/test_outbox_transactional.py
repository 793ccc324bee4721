"""Transactional outbox: each message is written in the transaction of the change it describes."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from django.test import override_settings

from dj_cqrs.models import OutboxMessage
from dj_cqrs.outbox import relay_once, sending
from tests.dj_master.models import GoldenParent
from tests.dj_replica.models import GoldenParentReplica
from tests.test_outbox import FlakyTransport, _broker_up, cqrs  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.django_db(transaction=True)

TRANSACTIONAL = cqrs(CQRS_OUTBOX_MODE='transactional', CQRS_OUTBOX_HOLD=0, CQRS_OUTBOX_GRACE=0)


def bodies() -> list[dict]:
    return [
        json.loads(b) for b in OutboxMessage.objects.order_by('id').values_list('body', flat=True)
    ]


@override_settings(CQRS=TRANSACTIONAL)
def test_message_is_in_the_outbox_before_commit_and_gone_after_publish(published):
    """Inside the transaction the outbox holds the message; after commit it is sent and deleted."""
    with transaction.atomic():
        GoldenParent.objects.create(id=1, name='a')
        assert [b['instance_data']['name'] for b in bodies()] == ['a']
        assert published() == []
    assert not OutboxMessage.objects.exists()
    assert [b['instance_data']['name'] for _, b in published()] == ['a']
    assert GoldenParentReplica.objects.get(id=1).name == 'a'


@override_settings(CQRS=TRANSACTIONAL)
def test_rollback_leaves_no_message(published):
    """A rolled back change leaves neither a row nor a message."""
    with pytest.raises(RuntimeError), transaction.atomic():
        GoldenParent.objects.create(id=1, name='a')
        raise RuntimeError('rollback')
    assert not OutboxMessage.objects.exists()
    assert published() == []


@override_settings(CQRS=TRANSACTIONAL)
def test_repeated_saves_write_one_message_with_the_final_state(published):
    """Several saves of a row in one transaction: one outbox row, rewritten, one message sent."""
    GoldenParent.objects.create(id=1, name='a')
    with transaction.atomic():
        parent = GoldenParent.objects.get(id=1)
        parent.name = 'b'
        parent.save()
        other = GoldenParent.objects.get(id=1)
        other.name = 'c'
        other.save()
        assert [
            (b['instance_data']['name'], b['instance_data']['cqrs_revision']) for b in bodies()
        ] == [('c', 1)]
    assert [b['instance_data']['name'] for _, b in published()] == ['a', 'c']
    assert GoldenParentReplica.objects.get(id=1).cqrs_revision == 1


@override_settings(CQRS=TRANSACTIONAL)
def test_crash_right_after_commit_is_recovered_by_the_relay(monkeypatch):
    """If the process dies after commit, before publishing, the relay sends the messages."""
    monkeypatch.setattr(sending, 'send_staged', lambda *args, **kwargs: None)  # process died
    with transaction.atomic():
        GoldenParent.objects.create(id=1, name='a')
        GoldenParent.objects.create(id=2, name='b')
    with transaction.atomic():
        GoldenParent.objects.get(id=2).delete()
    assert not GoldenParentReplica.objects.exists()
    assert [b['signal_type'] for b in bodies()] == ['SAVE', 'SAVE', 'DELETE']
    monkeypatch.undo()
    assert relay_once().sent == 3
    assert {r.id: r.name for r in GoldenParentReplica.objects.all()} == {1: 'a'}
    assert not OutboxMessage.objects.exists()


@override_settings(CQRS=TRANSACTIONAL)
def test_broker_down_at_commit_keeps_the_staged_row_for_the_relay():
    """A failed publish at commit leaves the (already durable) row with its try counted."""
    FlakyTransport.down = True
    with transaction.atomic():
        GoldenParent.objects.create(id=1, name='a')
    row = OutboxMessage.objects.get()
    assert row.attempts == 1 and 'broker is down' in row.last_error
    FlakyTransport.down = False
    OutboxMessage.objects.update(next_attempt_at=None)
    assert relay_once().sent == 1
    assert GoldenParentReplica.objects.get(id=1).name == 'a'


@override_settings(CQRS=TRANSACTIONAL)
def test_created_and_deleted_in_one_transaction_leaves_nothing(published):
    """A row that never existed outside its transaction sends nothing and keeps nothing."""
    with transaction.atomic():
        parent = GoldenParent.objects.create(id=1, name='a')
        parent.delete()
    assert not OutboxMessage.objects.exists()
    assert published() == []


@override_settings(CQRS=cqrs(CQRS_OUTBOX_MODE='transactional', CQRS_OUTBOX_GRACE=3600))
def test_relay_leaves_fresh_staged_rows_to_their_own_process(monkeypatch):
    """Staged rows younger than the grace period are not relayed (their process sends them)."""
    monkeypatch.setattr(sending, 'send_staged', lambda *args, **kwargs: None)
    with transaction.atomic():
        GoldenParent.objects.create(id=1, name='a')
    assert relay_once().sent == 0
    assert OutboxMessage.objects.count() == 1
