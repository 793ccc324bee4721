"""Replica apply rules and their log lines (original.md §3.4), through the consumer path."""

import pytest

from dj_cqrs.consumer import handler
from dj_cqrs.controller.consumer import route_signal_to_replica_model
from dj_cqrs.wire import encode_body
from tests.dj_master.models import Author, Book, DirectOnly, GoldenFields, Publisher
from tests.dj_replica.models import (
    MEMORY_STORE,
    AuthorReplica,
    BookReplica,
    DirectOnlyReplica,
    EventLog,
    GoldenFieldsReplica,
    GoldenParentReplica,
    GoldenSerializedReplica,
)

pytestmark = pytest.mark.django_db(transaction=True)

UPDATED = '2024-01-01 00:00:00+00:00'


def body(signal='SAVE', cqrs_id='golden_parent', pk=1, revision=0, **data):
    instance = {'id': pk, 'cqrs_revision': revision, 'cqrs_updated': UPDATED, **data}
    return encode_body({
        'signal_type': signal, 'cqrs_id': cqrs_id, 'instance_data': instance,
        'previous_data': None, 'instance_pk': pk, 'correlation_id': None, 'retries': 0,
        'expires': None, 'meta': None,
    })


def apply(raw, routing_key='golden_parent'):
    return handler.handle(raw, routing_key).action


def test_create_then_next_revision_updates():
    """A SAVE creates the row; the next revision updates it."""
    assert apply(body(name='a')) is handler.Action.ACK
    assert apply(body(revision=1, name='b')) is handler.Action.ACK
    assert GoldenParentReplica.objects.get(id=1).name == 'b'


def test_older_revision_is_ignored_with_error_line(cqrs_log):
    """An older SAVE is acked but not applied: 'Wrong CQRS sync order'."""
    apply(body(revision=3, name='new'))
    assert apply(body(revision=1, name='old')) is handler.Action.ACK
    assert GoldenParentReplica.objects.get(id=1).name == 'new'
    assert ('ERROR Wrong CQRS sync order: pk = 1, cqrs_revision = new 1 / existing 3 '
            '(golden_parent).') in cqrs_log()


def test_duplicate_revision_is_ignored_with_race_warning_at_zero(cqrs_log):
    """The same revision twice: error line, and the creation-race warning for revision 0."""
    apply(body(name='a'))
    apply(body(name='dup'))
    assert GoldenParentReplica.objects.get(id=1).name == 'a'
    lines = cqrs_log()
    assert 'ERROR Received duplicate CQRS data: pk = 1, cqrs_revision = 0 (golden_parent).' in lines
    assert 'WARNING CQRS potential creation race condition: pk = 1 (golden_parent).' in lines


def test_revision_gap_applies_with_warning(cqrs_log):
    """A gap in revisions applies and warns how many messages were lost or filtered."""
    apply(body(revision=1, name='a'))
    apply(body(revision=5, name='gap'))
    assert GoldenParentReplica.objects.get(id=1).name == 'gap'
    assert ('WARNING Lost or filtered out 3 CQRS packages: pk = 1, cqrs_revision = 5 '
            '(golden_parent)') in cqrs_log()


def test_sync_downgrade_applies_with_warning(cqrs_log):
    """A SYNC is authoritative: it applies even with a lower revision, with a warning."""
    apply(body(revision=5, name='a'))
    apply(body('SYNC', revision=1, name='synced'))
    row = GoldenParentReplica.objects.get(id=1)
    assert (row.name, row.cqrs_revision) == ('synced', 1)
    assert ('WARNING CQRS revision downgrade on sync: pk = 1, cqrs_revision = new 1 / existing 5 '
            '(golden_parent).') in cqrs_log()


def test_missing_sync_fields_or_required_fields_fail(cqrs_log):
    """Missing revision fields or required fields fail the message (to be retried)."""
    raw = encode_body({'signal_type': 'SAVE', 'cqrs_id': 'golden_parent', 'instance_pk': 1,
                       'instance_data': {'id': 1, 'name': 'x'}, 'expires': None})
    assert apply(raw) is handler.Action.RETRY
    assert apply(body()) is handler.Action.RETRY
    lines = cqrs_log()
    assert 'ERROR CQRS sync fields are not provided in data (golden_parent).' in lines
    assert 'ERROR Not all required CQRS fields are provided in data (golden_parent).' in lines


def test_delete_of_missing_row_is_acked_and_delete_without_id_fails(cqrs_log):
    """DELETE of a missing pk is fine; a DELETE without id fails with the PK error line."""
    assert apply(body('DELETE', pk=404)) is handler.Action.ACK
    raw = encode_body({'signal_type': 'DELETE', 'cqrs_id': 'golden_parent', 'instance_pk': 1,
                       'instance_data': {'cqrs_revision': 1, 'cqrs_updated': UPDATED},
                       'expires': None})
    assert apply(raw) is handler.Action.RETRY
    assert 'ERROR CQRS PK is not provided in data (golden_parent).' in cqrs_log()


def test_mapping_renames_fields_and_drops_unmapped(cqrs_log):
    """CQRS_MAPPING: master names become replica names; unmapped keys are dropped."""
    raw = body(cqrs_id='golden_serialized', name='T', price=5.5, happened=UPDATED, parent=1,
               parent_name='P', tags=['a'])
    assert apply(raw, 'golden_serialized') is handler.Action.ACK
    row = GoldenSerializedReplica.objects.get(id=1)
    assert (row.title, row.parent_name, row.tags) == ('T', 'P', ['a'])
    bad = body(cqrs_id='golden_serialized', price=5.5)
    assert apply(bad, 'golden_serialized') is handler.Action.RETRY
    assert 'ERROR Bad master-replica mapping for name (golden_serialized).' in cqrs_log()


def test_foreign_keys_apply_from_raw_ids():
    """A default replica with a real ForeignKey is filled from the raw id in the message."""
    publisher = Publisher.objects.create(name='pub')
    author = Author.objects.create(name='A', publisher=publisher)
    replica = AuthorReplica.objects.get(id=author.id)
    assert replica.publisher_id == publisher.id
    author.publisher = None
    author.save()
    assert AuthorReplica.objects.get(id=author.id).publisher_id is None


def test_custom_serialization_hooks_receive_raw_data():
    """CQRS_CUSTOM_SERIALIZATION: hooks get the message data unfiltered."""
    author = Author.objects.create(name='Writer')
    book = Book.objects.create(title='T1', author=author)
    assert BookReplica.objects.get(id=book.id).author_name == 'Writer'
    book.title = 'T2'
    book.save()
    assert BookReplica.objects.get(id=book.id).title == 'T2'


def test_meta_previous_data_and_sync_reach_the_hooks(settings):
    """CQRS_META models get meta; hooks see previous_data (with {} turned into None) and sync."""
    settings.CQRS = {**settings.CQRS, 'master': {'meta_function': 'tests.hooks.meta_function'}}
    obj = GoldenFields.objects.create(id=1, title='a', secret='s')
    row = GoldenFieldsReplica.objects.get(id=1)
    assert row.last_meta == {'from': 'tests', 'signal_type': 'SAVE'}
    assert row.last_previous == {'title': None, 'secret': None}
    obj.title = 'b'
    obj.save()
    row.refresh_from_db()
    assert row.last_previous == {'title': 'a'}
    obj.amount = 9
    obj.save()
    row.refresh_from_db()
    assert row.last_previous is None
    obj.cqrs_sync()
    row.refresh_from_db()
    assert row.last_sync is True and row.last_meta['signal_type'] == 'SYNC'


def test_only_direct_syncs_apply_syncs_addressed_to_this_queue():
    """CQRS_ONLY_DIRECT_SYNCS: broadcast SYNCs are ignored, syncs to our queue apply."""
    obj = DirectOnly.objects.create(id=1, name='a')
    DirectOnly.objects.filter(id=1).update(name='changed')
    obj.refresh_from_db()
    assert obj.cqrs_sync() is True
    assert DirectOnlyReplica.objects.get(id=1).name == 'a'
    assert obj.cqrs_sync(queue='replica') is True
    assert DirectOnlyReplica.objects.get(id=1).name == 'changed'


def test_sync_to_another_queue_does_not_reach_us():
    """A SYNC addressed to another service's queue is not delivered here."""
    obj = DirectOnly.objects.create(id=1, name='a')
    DirectOnly.objects.filter(id=1).update(name='changed')
    obj.cqrs_sync(queue='other_service')
    assert DirectOnlyReplica.objects.get(id=1).name == 'a'


def test_db_less_replica_and_raw_consumer():
    """Abstract (DB-less) replicas and non-model consumers get their hooks called."""
    MEMORY_STORE.clear()
    EventLog.events.clear()
    raw = body(cqrs_id='silent_memory', pk=3, name='m')
    assert apply(raw, 'silent_memory') is handler.Action.ACK
    assert MEMORY_STORE[3][0]['name'] == 'm'
    assert apply(body('DELETE', cqrs_id='silent_memory', pk=3), 'silent_memory') is (
        handler.Action.ACK)
    assert 3 not in MEMORY_STORE
    assert apply(body('SYNC', cqrs_id='event_log', pk=7), 'event_log') is handler.Action.ACK
    assert EventLog.events[-1][0] == 'save' and EventLog.events[-1][2] is True


def test_bad_signal_type_is_logged_and_not_applied(cqrs_log):
    """route_signal_to_replica_model refuses an unknown signal type with the original's line."""
    assert route_signal_to_replica_model('UPSERT', 'golden_parent', {'id': 1}) is None
    assert 'ERROR Bad signal type "UPSERT" for CQRS_ID "golden_parent".' in cqrs_log()


def test_retry_hooks_decide_retries_and_dead_letters(settings):
    """A failing replica is retried CQRS_MAX_RETRIES times, then dead-lettered with the count."""
    from dj_cqrs.transport import InProcessTransport
    from dj_cqrs.wire import decode_body
    from tests.dj_master.models import GoldenFail

    settings.CQRS = {**settings.CQRS, 'replica': {'CQRS_MAX_RETRIES': 2, 'CQRS_RETRY_DELAY': 0}}
    GoldenFail.objects.create(id=1, name='x')
    (dead,) = InProcessTransport.dead_letters
    assert dead.routing_key == 'cqrs.dead_letter_replica.golden_fail'
    assert decode_body(dead.body)['retries'] == 2
