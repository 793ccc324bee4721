"""Several workers, messages of one row in any order: the replica ends at the newest revision."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable

import pytest
from django.db import connection, connections
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext

from dj_cqrs.consumer import handler
from dj_cqrs.replica import convergence
from dj_cqrs.transport import InProcessTransport
from tests.dj_master.models import GoldenFields, GoldenParent
from tests.dj_replica.models import GoldenFieldsReplica, GoldenParentReplica

pytestmark = pytest.mark.django_db(transaction=True)


def master_stream(rows: int, updates: int) -> list[tuple[bytes, str]]:
    """Bodies a real master publishes for ``rows`` rows changed ``updates`` times each."""
    InProcessTransport.apply = False
    parents = [GoldenParent.objects.create(id=pk, name=f'{pk}-0') for pk in range(1, rows + 1)]
    for step in range(1, updates + 1):
        for parent in parents:
            parent.name = f'{parent.pk}-{step}'
            parent.save()
    stream = [(d.body, d.routing_key) for d in InProcessTransport.published]
    InProcessTransport.apply = True
    return stream


def master_rows() -> dict[int, tuple[str, int]]:
    return {p.id: (p.name, p.cqrs_revision) for p in GoldenParent.objects.all()}


def replica_rows() -> dict[int, tuple[str, int]]:
    return {r.id: (r.name, r.cqrs_revision) for r in GoldenParentReplica.objects.all()}


def run_workers(count: int, work: Callable[[int], Iterable[tuple[bytes, str]]]) -> list:
    """Apply each worker's deliveries in its own thread (own DB connection); all outcomes."""
    return run_batches(count, lambda i: [handler.handle(body, key) for body, key in work(i)])


def run_batches(count: int, work: Callable[[int], list]) -> list:
    """Run ``work(index)`` in ``count`` threads at once (own DB connections); all outcomes."""
    outcomes: list = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def worker(index: int) -> None:
        try:
            barrier.wait(10)
            outcomes.extend(work(index))
        except BaseException as err:  # reported below
            errors.append(err)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return outcomes


def require_row_locks() -> None:
    if not connection.features.has_select_for_update:
        pytest.skip(
            f'concurrent workers need a database with row locks, {connection.vendor} has none '
            '(run with DB=postgres or DB=mariadb)'
        )


def test_shuffled_updates_converge_in_one_worker():
    """Updates of many rows applied in a random order leave every row at the master's state."""
    stream = master_stream(rows=10, updates=10)
    random.Random(3).shuffle(stream)
    for body, key in stream:
        assert handler.handle(body, key).action is handler.Action.ACK
    assert replica_rows() == master_rows()


def test_four_workers_with_shuffled_updates_converge():
    """4 concurrent workers, shuffled updates of the same rows: the replica equals the master."""
    require_row_locks()
    stream = master_stream(rows=10, updates=20)
    random.Random(5).shuffle(stream)
    outcomes = run_workers(4, lambda i: stream[i::4])
    assert [o.action for o in outcomes] == [handler.Action.ACK] * len(stream)
    assert replica_rows() == master_rows()


def test_concurrent_creates_of_one_row_do_not_fail(cqrs_log):
    """Two workers creating the same row at once both succeed; the newer revision wins."""
    require_row_locks()
    stream = master_stream(rows=1, updates=1)  # revision 0 and 1 of row 1
    for _ in range(5):
        GoldenParentReplica.objects.all().delete()
        outcomes = run_workers(2, lambda i: [stream[i]])
        assert [o.action for o in outcomes] == [handler.Action.ACK] * 2
        assert replica_rows() == master_rows()
    assert not any('CQRS create error' in line for line in cqrs_log())


def test_plain_model_updates_with_compare_and_set():
    """A plain replica model is updated by one conditional UPDATE (no row lock is taken)."""
    assert convergence.compare_and_set_ok(GoldenParentReplica)
    stream = master_stream(rows=1, updates=1)
    handler.handle(*stream[0])
    with CaptureQueriesContext(connection) as queries:
        handler.handle(*stream[1])
    updates = [q['sql'] for q in queries if q['sql'].startswith('UPDATE')]
    revision = connection.ops.quote_name('cqrs_revision')
    assert any(f'{revision} <' in sql for sql in updates), updates
    assert not any('FOR UPDATE' in q['sql'] for q in queries)


def test_model_with_custom_hooks_is_locked_and_its_hook_runs():
    """A model that overrides ``cqrs_update`` gets its row locked and its hook still runs."""
    assert not convergence.compare_and_set_ok(GoldenFieldsReplica)
    InProcessTransport.apply = True
    row = GoldenFields.objects.create(title='a', amount=1)
    with CaptureQueriesContext(connection) as queries:
        row.title = 'b'
        row.save()
    replica = GoldenFieldsReplica.objects.get(id=row.id)
    assert (replica.title, replica.cqrs_revision, replica.last_sync) == ('b', 1, False)
    if connection.features.has_select_for_update:
        assert any('FOR UPDATE' in q['sql'] for q in queries)


def test_save_receivers_of_a_replica_model_still_see_updates():
    """Who listens to post_save of a replica model keeps being called on updates."""
    seen: list[tuple[int, int]] = []

    def receiver(sender, instance, created, **kwargs):
        seen.append((instance.pk, instance.cqrs_revision))

    post_save.connect(receiver, sender=GoldenParentReplica, weak=False)
    try:
        assert not convergence.compare_and_set_ok(GoldenParentReplica)
        parent = GoldenParent.objects.create(id=1, name='a')
        parent.name = 'b'
        parent.save()
    finally:
        post_save.disconnect(receiver, sender=GoldenParentReplica)
    assert seen == [(1, 0), (1, 1)]
    assert replica_rows() == {1: ('b', 1)}


def deleted_row_stream() -> tuple[tuple[bytes, str], tuple[bytes, str], tuple[bytes, str]]:
    """The master's SAVE of rows 1 and 2 (revision 0), then its DELETE of row 1 (revision 1)."""
    InProcessTransport.apply = False
    doomed = GoldenParent.objects.create(id=1, name='a')
    GoldenParent.objects.create(id=2, name='b')
    doomed.delete()
    save_1, save_2, delete_1 = [(d.body, d.routing_key) for d in InProcessTransport.published]
    InProcessTransport.apply = True
    return save_1, save_2, delete_1


def delete_after_a_moment(delete: tuple[bytes, str]):
    def work(index: int):
        if index == 1:
            time.sleep(0.1)  # the other worker is past its tombstone check by now
            yield delete

    return work


def test_a_delete_and_a_late_create_of_one_row_on_two_workers_never_resurrect_it(monkeypatch):
    """Worker A creates row 1 from a late SAVE while worker B applies its DELETE: no row left.

    A waits between its tombstone check and its insert; B must wait for A (the row lock of
    the tombstones), then delete the row A created, instead of recording a tombstone A missed.
    """
    from dj_cqrs.replica import tombstones

    require_row_locks()
    save_1, _, delete_1 = deleted_row_stream()
    find = tombstones.find

    def slow_find(*args, **kwargs):
        found = find(*args, **kwargs)
        time.sleep(0.5)
        return found

    monkeypatch.setattr(tombstones, 'find', slow_find)
    work = delete_after_a_moment(delete_1)
    outcomes = run_workers(2, lambda i: [save_1] if i == 0 else work(i))
    assert [o.action for o in outcomes] == [handler.Action.ACK] * 2
    assert replica_rows() == {}


def test_a_delete_and_a_batched_create_of_one_row_on_two_workers_never_resurrect_it(monkeypatch):
    """The same race with the create in a batch (bulk INSERT): the row stays deleted."""
    from dj_cqrs.consumer import batch
    from dj_cqrs.replica import writes

    require_row_locks()
    save_1, save_2, delete_1 = deleted_row_stream()
    insert = writes.Table.insert

    def slow_insert(self, *args, **kwargs):
        time.sleep(0.5)
        return insert(self, *args, **kwargs)

    monkeypatch.setattr(writes.Table, 'insert', slow_insert)
    work = delete_after_a_moment(delete_1)

    def worker(index: int):
        if index == 0:
            return batch.apply_batch([save_1, save_2])
        return [handler.handle(*delivery) for delivery in work(index)]

    outcomes = run_batches(2, worker)
    assert [o.action for o in outcomes] == [handler.Action.ACK] * 3
    assert replica_rows() == {2: ('b', 0)}


def lock_is_free(pk: int) -> bool:
    """Whether another connection can take the tombstone row lock of row ``pk`` right now."""
    from django.db import OperationalError, transaction

    from dj_cqrs.replica import tombstones

    free: list[bool] = []

    def probe(index: int) -> list:
        with transaction.atomic():
            with connection.cursor() as cursor:
                if connection.vendor == 'postgresql':
                    cursor.execute("SET LOCAL lock_timeout = '200ms'")
                else:
                    cursor.execute('SET SESSION innodb_lock_wait_timeout = 1')
            try:
                with transaction.atomic():
                    tombstones.lock_row(GoldenParentReplica, pk, 'default')
            except OperationalError:
                free.append(False)
            else:
                free.append(True)
        return []

    run_batches(1, probe)
    return free == [True]


def test_row_locks_are_held_until_the_transaction_ends():
    """A tombstone row lock blocks other workers until commit or rollback, never longer."""
    from django.db import transaction

    from dj_cqrs.replica import rowlocks, tombstones

    if connection.vendor not in ('postgresql', 'mysql'):
        pytest.skip(f'{connection.vendor} has no row locks for tombstones (one writer at a time)')
    with transaction.atomic():
        assert tombstones.lock_row(GoldenParentReplica, 42, 'default')
        assert not lock_is_free(42)
    assert lock_is_free(42)

    with pytest.raises(RuntimeError), transaction.atomic():
        tombstones.lock_row(GoldenParentReplica, 42, 'default')
        raise RuntimeError('rolled back')
    rowlocks.release_ended(connection)  # what the consumer does after each transaction
    assert lock_is_free(42)

    with pytest.raises(RuntimeError), transaction.atomic():
        tombstones.lock_row(GoldenParentReplica, 42, 'default')
        raise RuntimeError('rolled back')
    with transaction.atomic():  # the next lock of the connection releases the stale one
        tombstones.lock_row(GoldenParentReplica, 43, 'default')
        assert lock_is_free(42)
        assert not lock_is_free(43)
    assert lock_is_free(43)


def test_a_failed_direct_save_leaves_no_row_lock_behind(cqrs_log):
    """``cqrs_save`` called outside a transaction, failing after it took the row lock, rolls
    back its own transaction and releases the lock: other workers do not wait for it."""
    if connection.vendor not in ('postgresql', 'mysql'):
        pytest.skip(f'{connection.vendor} has no row locks for tombstones (one writer at a time)')
    data = {'id': 5, 'name': None, 'cqrs_revision': 0, 'cqrs_updated': '2024-01-01T00:00:00+00:00'}
    assert not GoldenParentReplica.cqrs_save(data)  # name is NOT NULL: the create fails
    assert any('CQRS create error: pk = 5' in line for line in cqrs_log())
    assert lock_is_free(5)
