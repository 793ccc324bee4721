"""Master revision counting and publishing rules (decisions §2.4)."""

import pytest
from django.db import transaction

from tests.dj_master.models import Counter, Filtered, GoldenParent, ProxyParent, Silent
from tests.dj_replica.models import CounterReplica, GoldenParentReplica

pytestmark = pytest.mark.django_db(transaction=True)


def _revisions(published, cqrs_id):
    return [b['instance_data']['cqrs_revision'] for _, b in published() if b['cqrs_id'] == cqrs_id]


def test_create_is_revision_zero_and_each_save_adds_one(published):
    """A create publishes revision 0; every later committed save publishes the next revision."""
    obj = Counter.objects.create(id=1)
    for value in range(1, 4):
        obj.value = value
        obj.save()
    assert _revisions(published, 'counter') == [0, 1, 2, 3]
    assert obj.cqrs_revision == 3
    assert CounterReplica.objects.get(id=1).value == 3


def test_update_fields_without_cqrs_flag_neither_bumps_nor_publishes(published):
    """save(update_fields=[...]) is silent unless update_cqrs_fields=True (original semantics)."""
    obj = Counter.objects.create(id=1)
    obj.value = 5
    obj.save(update_fields=['value'])
    assert _revisions(published, 'counter') == [0]
    obj.refresh_from_db()
    assert obj.cqrs_revision == 0
    obj.value = 6
    obj.save(update_fields=['value'], update_cqrs_fields=True)
    assert _revisions(published, 'counter') == [0, 1]
    assert CounterReplica.objects.get(id=1).value == 6


def test_auto_update_fields_setting_makes_update_fields_publish(settings, published):
    """CQRS_AUTO_UPDATE_FIELDS=True: update_fields saves bump and publish by default."""
    settings.CQRS = {**settings.CQRS, 'master': {'CQRS_AUTO_UPDATE_FIELDS': True}}
    obj = Counter.objects.create(id=1)
    obj.value = 7
    obj.save(update_fields=['value'])
    assert _revisions(published, 'counter') == [0, 1]


def test_saves_in_one_transaction_publish_once_with_final_state(published):
    """Create plus two saves in one atomic block: one message, final data, revision 0."""
    with transaction.atomic():
        obj = Counter.objects.create(id=1, value=1)
        obj.value = 2
        obj.save()
        obj.value = 3
        obj.save()
        assert published() == []
    assert [(b['instance_data']['value'], b['instance_data']['cqrs_revision'])
            for _, b in published()] == [(3, 0)]


def test_repeated_updates_in_one_transaction_bump_once(published):
    """Three saves of an existing row in one transaction: +1 in the DB and in the message."""
    obj = Counter.objects.create(id=1)
    with transaction.atomic():
        for value in (1, 2, 3):
            obj.value = value
            obj.save()
    obj.refresh_from_db()
    assert obj.cqrs_revision == 1
    assert _revisions(published, 'counter') == [0, 1]
    assert CounterReplica.objects.get(id=1).value == 3


def test_two_objects_for_one_row_in_a_transaction_publish_the_last_state(published):
    """Two Python objects of one row saved in one transaction: one message with the final data."""
    Counter.objects.create(id=1)
    with transaction.atomic():
        first = Counter.objects.get(id=1)
        second = Counter.objects.get(id=1)
        first.value = 10
        first.save()
        second.value = 20
        second.save()
    bodies = [b for _, b in published()]
    assert [(b['instance_data']['value'], b['instance_data']['cqrs_revision'])
            for b in bodies] == [(0, 0), (20, 1)]
    assert Counter.objects.get(id=1).cqrs_revision == 1
    replica = CounterReplica.objects.get(id=1)
    assert (replica.value, replica.cqrs_revision) == (20, 1)


def test_rollback_publishes_nothing_and_next_transaction_counts_right(published):
    """A rolled-back change sends nothing; the next committed change is exactly +1."""
    obj = Counter.objects.create(id=1)
    with pytest.raises(RuntimeError), transaction.atomic():
        obj.value = 1
        obj.save()
        raise RuntimeError('rollback')
    obj.refresh_from_db()
    obj.value = 2
    obj.save()
    assert _revisions(published, 'counter') == [0, 1]


def test_savepoint_rollback_drops_only_its_message(published):
    """A change inside a rolled-back savepoint is not published; the outer one is."""
    with transaction.atomic():
        Counter.objects.create(id=1)
        try:
            with transaction.atomic():
                Counter.objects.create(id=2)
                raise RuntimeError
        except RuntimeError:
            pass
    assert [b['instance_pk'] for _, b in published()] == [1]


def test_sequential_transactions_on_one_object_each_publish(published):
    """The same object saved in several transactions publishes each time (+1 each)."""
    obj = Counter.objects.create(id=1)
    for value in (1, 2, 3):
        with transaction.atomic():
            obj.value = value
            obj.save()
            obj.save()
    assert _revisions(published, 'counter') == [0, 1, 2, 3]


def test_unpublished_instance_later_published_counts_right(published):
    """A row hidden by is_sync_instance() still counts revisions and publishes once visible."""
    obj = Filtered.objects.create(id=1, name='a', public=False)
    with transaction.atomic():
        obj.name = 'b'
        obj.save()
    with transaction.atomic():
        obj.public = True
        obj.save()
    assert _revisions(published, 'filtered') == [2]
    assert obj.cqrs_revision == 2


def test_cqrs_produce_false_never_publishes(published):
    """CQRS_PRODUCE = False: saves and deletes send nothing, cqrs_sync returns False."""
    obj = Silent.objects.create(name='x')
    obj.save()
    assert obj.cqrs_sync() is False
    obj.delete()
    assert published() == []


def test_proxy_model_saves_publish(published):
    """Saving through a proxy of a master model publishes like the model itself."""
    ProxyParent.objects.create(id=5, name='via proxy')
    assert published()[0][1]['cqrs_id'] == 'golden_parent'
    assert GoldenParentReplica.objects.get(id=5).name == 'via proxy'


def test_raw_saves_from_fixtures_do_not_publish(published, tmp_path):
    """loaddata (raw saves) does not publish."""
    import json

    from django.core.management import call_command

    fixture = tmp_path / 'parents.json'
    fixture.write_text(json.dumps([{
        'model': 'dj_master.goldenparent',
        'pk': 9,
        'fields': {'name': 'fixture', 'cqrs_revision': 0, 'cqrs_updated': '2024-01-01T00:00:00Z'},
    }]))
    call_command('loaddata', str(fixture), verbosity=0)
    assert GoldenParent.objects.get(pk=9).name == 'fixture'
    assert published() == []


def test_message_is_published_only_after_commit(published):
    """Nothing leaves before the transaction commits."""
    with transaction.atomic():
        GoldenParent.objects.create(id=1, name='a')
        assert published() == []
    assert len(published()) == 1


def test_delete_carries_next_revision(published):
    """DELETE sends id, revision + 1 and the deletion time."""
    obj = GoldenParent.objects.create(id=1, name='a')
    obj.name = 'b'
    obj.save()
    obj.delete()
    delete = published()[-1][1]
    assert delete['signal_type'] == 'DELETE'
    assert delete['instance_data']['id'] == 1
    assert delete['instance_data']['cqrs_revision'] == 2
    assert delete['previous_data'] is None


def test_save_then_delete_in_one_transaction(published):
    """Update then delete in one transaction: only DELETE r+1 is sent, the replica row goes."""
    obj = GoldenParent.objects.create(id=1, name='a')
    with transaction.atomic():
        obj.name = 'b'
        obj.save()
        obj.delete()
    assert [(b['signal_type'], b['instance_data']['cqrs_revision']) for _, b in published()] == [
        ('SAVE', 0), ('DELETE', 1)]
    assert not GoldenParentReplica.objects.exists()


def test_create_then_delete_in_one_transaction_sends_nothing(published):
    """A row created and deleted in the same transaction never existed for the replicas."""
    with transaction.atomic():
        obj = GoldenParent.objects.create(id=1, name='a')
        obj.delete()
    assert published() == []


def test_queryset_delete_publishes_one_delete_per_row(published):
    """Queryset delete sends a DELETE for every row."""
    GoldenParent.objects.create(id=1, name='a')
    GoldenParent.objects.create(id=2, name='b')
    GoldenParent.objects.all().delete()
    assert sorted(b['instance_pk'] for _, b in published() if b['signal_type'] == 'DELETE') == [
        1, 2]


def test_a_failing_message_does_not_stop_the_others(published, cqrs_log, monkeypatch):
    """An error while building one message is logged; the other messages still go out."""
    from tests.dj_master.models import GoldenTime

    def boom(self, **kwargs):
        raise ValueError('meta exploded')

    monkeypatch.setattr(GoldenTime, 'get_cqrs_meta', boom)
    import datetime

    with transaction.atomic():
        GoldenTime.objects.create(id=1, name='t', at=datetime.time(1, 2))
        GoldenParent.objects.create(id=1, name='still sent')
    assert [b['cqrs_id'] for _, b in published()] == ['golden_parent']
    assert any("CQRS message can't be built: pk = 1 (golden_time)." in line for line in cqrs_log())


def test_publish_error_never_reaches_the_caller(settings, cqrs_log):
    """A transport exception at commit is logged; the caller's save succeeds."""
    settings.CQRS = {**settings.CQRS, 'transport': 'tests.transports.FailingTransport'}
    obj = GoldenParent.objects.create(id=1, name='kept')
    assert GoldenParent.objects.filter(pk=obj.pk).exists()
    assert any("CQRS couldn't be published: pk = 1 (golden_parent)." in line for line in cqrs_log())


def test_on_commit_runs_on_the_written_database():
    """The publish waits for the commit of the database the row was written to."""
    from dj_cqrs.master import publishing

    obj = Counter(id=1)
    with transaction.atomic(using='default'):
        obj.save(using='default')
        pending = publishing.pending_for(obj, 'default')
        assert pending is not None and pending.using == 'default'
