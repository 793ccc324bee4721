"""The lag tracker: applied messages aggregated in memory, upserted into ReplicaState."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.models import ReplicaState
from dj_cqrs.observability import lag
from tests.dj_master.models import GoldenParent


def payload(pk, revision, updated, cqrs_id='golden_parent'):
    data = {'id': pk, 'name': 'x', 'cqrs_revision': revision, 'cqrs_updated': updated.isoformat()}
    return TransportPayload('SAVE', cqrs_id, data, pk)


@pytest.fixture(autouse=True)
def _fresh_tracker():
    lag.tracker.discard()
    yield
    lag.tracker.discard()


@pytest.mark.django_db(transaction=True)
def test_in_process_apply_writes_last_applied_and_lag():
    """A message applied in process is in ReplicaState at once: pk, revision, count, small lag."""
    parent = GoldenParent.objects.create(id=3, name='a')
    parent.name = 'b'
    parent.save()
    state = ReplicaState.objects.get(cqrs_id='golden_parent')
    assert (state.last_pk, state.last_revision, state.applied_count) == ('3', 1, 2)
    assert 0 <= state.last_lag < 5
    assert state.last_master_updated == GoldenParent.objects.get(id=3).cqrs_updated
    assert abs((timezone.now() - state.last_applied_at).total_seconds()) < 5


@pytest.mark.django_db
def test_many_messages_are_one_write_per_cqrs_id():
    """Records between flushes are aggregated: one upsert per cqrs_id, counts add up."""
    tracker = lag.LagTracker(background=False)
    now = timezone.now()
    with override_settings(CQRS={'transport': 'dj_cqrs.transport.InProcessTransport'}):
        for pk in range(1, 101):
            tracker.record(payload(pk, pk, now - timedelta(seconds=2)), applied_at=now)
        tracker.record(payload(9, 4, now - timedelta(seconds=30), 'author'), applied_at=now)
        assert not ReplicaState.objects.exists()
        assert tracker.pending()['golden_parent'].count == 100
        assert tracker.flush() == 2
    parent = ReplicaState.objects.get(cqrs_id='golden_parent')
    assert (parent.applied_count, parent.last_pk, parent.last_revision) == (100, '100', 100)
    assert parent.last_lag == pytest.approx(2.0)
    author = ReplicaState.objects.get(cqrs_id='author')
    assert (author.applied_count, author.last_lag) == (1, pytest.approx(30.0))
    assert tracker.flush() == 0


@pytest.mark.django_db
def test_an_older_flush_never_moves_last_applied_back():
    """A worker flushing older records adds its count but keeps the newer last_* values."""
    tracker = lag.LagTracker(background=False)
    now = timezone.now()
    tracker.record(payload(2, 7, now), applied_at=now)
    tracker.flush()
    tracker.record(payload(1, 3, now), applied_at=now - timedelta(seconds=10))
    tracker.flush()
    state = ReplicaState.objects.get(cqrs_id='golden_parent')
    assert (state.applied_count, state.last_pk, state.last_revision) == (2, '2', 7)


@pytest.mark.django_db
def test_record_batch_does_not_count_signalled_messages_twice():
    """A batch path that sends message_applied inside ``deferred()`` and calls record_batch
    counts each message once."""
    from dj_cqrs import signals

    now = timezone.now()
    batch = [payload(pk, 0, now) for pk in (1, 2, 3)]
    with override_settings(
        CQRS={
            'transport': 'dj_cqrs.transport.InProcessTransport',
            'replica': {'CQRS_STATE_FLUSH_INTERVAL': 0},
        }
    ):
        with lag.deferred():
            for item in batch:
                signals.message_applied.send(None, payload=item, duration=0.0, lag=0.5)
        lag.record_batch(batch)
    state = ReplicaState.objects.get(cqrs_id='golden_parent')
    assert (state.applied_count, state.last_pk) == (3, '3')


@pytest.mark.django_db
def test_record_batch_counts_every_payload_it_is_given():
    """record_batch counts each payload it is given, whatever this thread signalled before: it
    keeps no memory of objects by ``id()``, which CPython hands to new objects once the old ones
    are freed (that memory once dropped whole batches from ``applied_count``)."""
    from dj_cqrs import signals

    now = timezone.now()
    signalled = payload(1, 0, now)
    with override_settings(
        CQRS={
            'transport': 'dj_cqrs.transport.InProcessTransport',
            'replica': {'CQRS_STATE_FLUSH_INTERVAL': 3600},
        }
    ):
        signals.message_applied.send(None, payload=signalled, lag=0.1)
        lag.record_batch([signalled, payload(2, 0, now)])
        lag.flush()
    state = ReplicaState.objects.get(cqrs_id='golden_parent')
    assert (state.applied_count, state.last_pk) == (3, '2')


def test_flush_interval_setting_is_validated():
    """A negative CQRS_STATE_FLUSH_INTERVAL is a configuration error naming the key."""
    from dj_cqrs.conf import parse
    from dj_cqrs.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match='CQRS_STATE_FLUSH_INTERVAL'):
        parse({'replica': {'CQRS_STATE_FLUSH_INTERVAL': -1}})
    assert parse({}).replica.state_flush_interval == 1.0


@pytest.mark.django_db
def test_without_flusher_thread_the_applying_thread_writes_once_per_interval():
    """No flusher thread: the first record is written at once, later ones wait for the interval."""
    tracker = lag.LagTracker()
    now = timezone.now()
    config = {
        'transport': 'dj_cqrs.transport.InProcessTransport',
        'replica': {'CQRS_STATE_FLUSH_INTERVAL': 3600},
    }
    with override_settings(CQRS=config):
        tracker.record(payload(1, 0, now), applied_at=now)
        tracker.record(payload(2, 0, now), applied_at=now)
    assert not tracker.flusher_running()
    state = ReplicaState.objects.get(cqrs_id='golden_parent')
    assert (state.applied_count, state.last_pk) == (1, '1')
    assert tracker.pending()['golden_parent'].pk == '2'
