"""The outbox: a message the transport cannot publish is kept and relayed, never lost."""

from __future__ import annotations

import datetime
import json
from typing import Any, ClassVar

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.exceptions import PublishError
from dj_cqrs.models import OutboxMessage
from dj_cqrs.outbox import relay_once, sending
from dj_cqrs.outbox.relaying import relay
from dj_cqrs.transport import InProcessTransport
from tests.dj_master.models import GoldenParent
from tests.dj_replica.models import GoldenParentReplica


class FlakyTransport(InProcessTransport):
    """The in-process transport behind a broker that can be switched off."""

    down: ClassVar[bool] = False
    calls: ClassVar[int] = 0

    @classmethod
    def produce(cls, payload: Any) -> bool:
        FlakyTransport.calls += 1
        if FlakyTransport.down:
            raise PublishError('broker is down (test)', payload)
        return super().produce(payload)


def cqrs(**master: Any) -> dict[str, Any]:
    return {
        'transport': 'tests.test_outbox.FlakyTransport',
        'queue': 'replica',
        'master': {'CQRS_AUTO_UPDATE_FIELDS': False, 'CQRS_MESSAGE_TTL': 86400, **master},
        'replica': {'CQRS_MAX_RETRIES': 2, 'CQRS_RETRY_DELAY': 0},
    }


@pytest.fixture(autouse=True)
def _broker_up():
    FlakyTransport.down = False
    FlakyTransport.calls = 0
    sending.hold.clear()
    sending._Backlog.pending = False
    yield
    FlakyTransport.down = False
    sending.hold.clear()
    sending._Backlog.pending = False


@pytest.fixture
def failures():
    """``message_publish_failed`` signals received, as (pk, kept) pairs."""
    seen: list[tuple[Any, bool]] = []

    def receiver(sender: Any, payload: Any, kept: bool = False, **kwargs: Any) -> None:
        seen.append((payload.pk, kept))

    signals.message_publish_failed.connect(receiver, weak=False)
    yield seen
    signals.message_publish_failed.disconnect(receiver)


def replica_names() -> dict[int, tuple[str, int]]:
    return {r.id: (r.name, r.cqrs_revision) for r in GoldenParentReplica.objects.all()}


pytestmark = pytest.mark.django_db(transaction=True)


@override_settings(CQRS=cqrs())
def test_failed_publish_is_kept_with_exact_body_then_relayed(failures, published):
    """Broker down at commit: the message waits in the outbox and the relay delivers it."""
    FlakyTransport.down = True
    GoldenParent.objects.create(id=1, name='kept')
    assert not GoldenParentReplica.objects.exists()
    row = OutboxMessage.objects.get()
    body = json.loads(row.body)
    assert (row.cqrs_id, row.signal_type, row.instance_pk, row.routing_key) == (
        'golden_parent',
        'SAVE',
        '1',
        'golden_parent',
    )
    assert body['instance_data']['name'] == 'kept'
    assert row.attempts == 1 and 'broker is down' in row.last_error
    assert (1, True) in failures

    FlakyTransport.down = False
    result = relay_once()
    assert (result.sent, result.failed) == (1, 0)
    assert replica_names() == {1: ('kept', 0)}
    assert not OutboxMessage.objects.exists()
    assert published()[-1][1] == body


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=60))
def test_after_a_failure_new_messages_skip_the_broker_for_the_hold_time():
    """During the hold, saves do not wait for a dead broker: their messages go to the outbox."""
    FlakyTransport.down = True
    GoldenParent.objects.create(id=1, name='a')
    GoldenParent.objects.create(id=2, name='b')
    GoldenParent.objects.create(id=3, name='c')
    assert FlakyTransport.calls == 1
    assert OutboxMessage.objects.count() == 3
    assert list(OutboxMessage.objects.values_list('attempts', flat=True)) == [1, 0, 0]


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0))
def test_kept_updates_of_one_row_are_relayed_oldest_first():
    """Kept revisions are sent in order: the replica applies each one, none out of order."""
    FlakyTransport.down = True
    parent = GoldenParent.objects.create(id=1, name='r0')
    for index in range(1, 4):
        parent.name = f'r{index}'
        parent.save()
    assert OutboxMessage.objects.count() == 4
    FlakyTransport.down = False
    assert relay_once().sent == 4
    assert replica_names() == {1: ('r3', 3)}


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0, CQRS_OUTBOX_RETRY_DELAY=30))
def test_relay_stops_at_the_first_failure_and_backs_off():
    """A relay that cannot publish keeps the message, counts the try and waits before the next."""
    FlakyTransport.down = True
    GoldenParent.objects.create(id=1, name='a')
    GoldenParent.objects.create(id=2, name='b')
    result = relay_once()
    assert (result.sent, result.failed) == (0, 1)
    first, second = OutboxMessage.objects.order_by('id')
    assert first.attempts == 2
    assert first.next_attempt_at > timezone.now() + datetime.timedelta(seconds=50)
    assert second.attempts == 1 and second.next_attempt_at is None
    FlakyTransport.down = False
    assert relay_once().sent == 1  # the second; the first waits for its back-off
    assert replica_names() == {2: ('b', 0)}


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0))
def test_master_catches_up_by_itself_once_the_broker_is_back():
    """Without a relay process, the next successful publish also sends what was kept."""
    FlakyTransport.down = True
    GoldenParent.objects.create(id=1, name='a')
    FlakyTransport.down = False
    GoldenParent.objects.create(id=2, name='b')
    assert replica_names() == {1: ('a', 0), 2: ('b', 0)}
    assert not OutboxMessage.objects.exists()


@override_settings(CQRS=cqrs(CQRS_OUTBOX_MODE='off'))
def test_outbox_off_drops_like_the_original_but_says_so(failures, cqrs_log):
    """With the outbox off a failed message is lost, with its body in an ERROR line."""
    FlakyTransport.down = True
    GoldenParent.objects.create(id=1, name='lost')
    assert not OutboxMessage.objects.exists()
    assert failures == [(1, False)]
    assert any(
        line.startswith("ERROR CQRS couldn't be published and is not kept (the outbox is off)")
        and '"name":"lost"' in line
        for line in cqrs_log()
    )


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0))
def test_direct_sync_is_relayed_to_its_queue(published):
    """A kept SYNC addressed to one replica queue is relayed with that queue's routing key."""
    GoldenParent.objects.create(id=1, name='a')
    FlakyTransport.down = True
    GoldenParent.objects.get(id=1).cqrs_sync(queue='replica')
    assert OutboxMessage.objects.get().routing_key == 'cqrs.replica.golden_parent'
    FlakyTransport.down = False
    relay_once()
    assert published()[-1][0] == 'cqrs.replica.golden_parent'
    assert published()[-1][1]['signal_type'] == 'SYNC'


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0))
def test_relay_command_once_and_status(capsys):
    """``cqrs_outbox status`` shows the backlog; ``relay --once`` empties it."""
    FlakyTransport.down = True
    GoldenParent.objects.create(id=1, name='a')
    call_command('cqrs_outbox', 'status')
    out = capsys.readouterr().out
    assert 'Messages: 1 (due now: 1)' in out
    assert 'golden_parent: 1' in out
    FlakyTransport.down = False
    call_command('cqrs_outbox', 'relay', '--once')
    assert 'Relayed 1 message(s), 0 failed attempt(s).' in capsys.readouterr().out
    assert replica_names() == {1: ('a', 0)}


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0))
def test_relay_command_once_fails_when_the_broker_is_down():
    """``relay --once`` exits with an error when messages could not be sent."""
    from django.core.management.base import CommandError

    FlakyTransport.down = True
    GoldenParent.objects.create(id=1, name='a')
    with pytest.raises(CommandError, match='stay in the outbox'):
        call_command('cqrs_outbox', 'relay', '--once', '--interval', '0.01')
    assert OutboxMessage.objects.count() == 1


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0))
def test_rows_claimed_by_another_relay_are_not_sent_twice():
    """A relay never takes rows another relay claimed (their lease lies in the future)."""
    from dj_cqrs.outbox.relaying import _claim

    FlakyTransport.down = True
    GoldenParent.objects.create(id=1, name='a')
    GoldenParent.objects.create(id=2, name='b')
    FlakyTransport.down = False
    first_relay = _claim('default', 1)
    assert [row[0] for row in first_relay] == [OutboxMessage.objects.order_by('id')[0].pk]
    assert relay_once().sent == 1  # only the row nobody claimed
    assert replica_names() == {2: ('b', 0)}
    assert _claim('default', 10) == []  # row 1 stays with the first relay until its lease ends
    assert OutboxMessage.objects.count() == 1


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0))
def test_relay_loop_stops_on_event():
    """The relay loop ends when its stop event is set (SIGTERM in the command)."""
    import threading

    stop = threading.Event()
    stop.set()
    assert relay(stop=stop).sent == 0


@override_settings(CQRS=cqrs(CQRS_OUTBOX_HOLD=0))
def test_two_relays_at_once_send_every_message_exactly_once():
    """Two relays draining one outbox concurrently: each message is published once."""
    import threading

    from django.db import connection, connections

    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip(
            f'concurrent relays need SKIP LOCKED, {connection.vendor} has none '
            '(run with DB=postgres or DB=mariadb)'
        )
    InProcessTransport.apply = False
    FlakyTransport.down = True
    for pk in range(1, 301):
        GoldenParent.objects.create(id=pk, name=str(pk))
    FlakyTransport.down = False
    InProcessTransport.reset()
    expected = set(OutboxMessage.objects.values_list('body', flat=True))
    barrier = threading.Barrier(2)

    def drain() -> None:
        try:
            barrier.wait(10)
            while relay_once(batch=20).sent:
                pass
        finally:
            connections.close_all()

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    bodies = [d.body.decode() for d in InProcessTransport.published]
    assert len(bodies) == 300
    assert set(bodies) == expected
    assert not OutboxMessage.objects.exists()
