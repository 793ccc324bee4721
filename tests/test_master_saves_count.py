"""``cqrs_saves_count`` / ``is_initial_cqrs_save``: saves of one object in one transaction.

The count is set back to 0 when the transaction commits, for every Python object saved in it
(original.md §2.3), so each object's first save of its next transaction is initial again.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from tests.dj_master.models import Counter, Filtered, Silent

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_object_of_a_row_saved_in_a_transaction_is_reset_at_commit(published):
    """Two objects of one row saved in one transaction: both counts are 0 after commit, and
    each one's first save of the next transaction is initial."""
    Counter.objects.create(id=1, value=0)
    first = Counter.objects.get(id=1)
    second = Counter.objects.get(id=1)
    with transaction.atomic():
        first.value = 1
        first.save()
        first.value = 2
        first.save()
        second.value = 3
        second.save()
        assert (first.cqrs_saves_count, second.cqrs_saves_count) == (2, 1)
    assert (first.cqrs_saves_count, second.cqrs_saves_count) == (0, 0)
    for obj in (first, second):
        with transaction.atomic():
            obj.save()
            assert obj.is_initial_cqrs_save
            assert obj.cqrs_saves_count == 1


@pytest.mark.parametrize(
    'save',
    [
        pytest.param(
            lambda obj: obj.save(update_fields=['value' if type(obj) is Counter else 'name']),
            id='update_fields',
        ),
        pytest.param(lambda obj: obj.save(), id='full_save'),
    ],
)
@pytest.mark.parametrize('model', [Counter, Silent, Filtered], ids=lambda m: m.__name__)
def test_saves_that_publish_nothing_are_reset_at_commit_too(model, save, published):
    """Saves that send no message (``update_fields`` without the CQRS flag, a model that
    does not publish, a row ``is_sync_instance()`` filters out) are counted and reset too."""
    fields = {'value': 0} if model is Counter else {'name': 'n'}
    if model is Filtered:
        fields['public'] = False
    obj = model.objects.create(**fields)
    with transaction.atomic():
        save(obj)
        save(obj)
        assert obj.cqrs_saves_count == 2
    assert obj.cqrs_saves_count == 0
    with transaction.atomic():
        save(obj)
        assert obj.is_initial_cqrs_save


def test_after_a_rollback_the_next_transaction_counts_from_one(published):
    """Saves of a rolled back transaction do not count in the next one."""
    obj = Counter.objects.create(id=1, value=0)
    with pytest.raises(RuntimeError), transaction.atomic():
        obj.save()
        obj.save()
        raise RuntimeError('rollback')
    with transaction.atomic():
        obj.save()
        assert obj.cqrs_saves_count == 1
        assert obj.is_initial_cqrs_save


def test_a_savepoint_rollback_keeps_the_outer_count(published):
    """A rolled back savepoint inside the transaction does not lose the outer saves' count
    nor their reset at commit."""
    obj = Counter.objects.create(id=1, value=0)
    other = Counter.objects.create(id=2, value=0)
    with transaction.atomic():
        obj.save()
        with pytest.raises(RuntimeError), transaction.atomic():
            other.save()
            obj.save()
            raise RuntimeError('rollback')
        obj.save()
        assert obj.cqrs_saves_count == 3
    assert (obj.cqrs_saves_count, other.cqrs_saves_count) == (0, 0)
    with transaction.atomic():
        other.save()
        assert other.cqrs_saves_count == 1


def test_outside_a_transaction_every_save_is_initial(published):
    """In autocommit mode each save is its own transaction: the count stays 0."""
    obj = Counter.objects.create(id=1, value=0)
    obj.save()
    obj.save()
    assert obj.cqrs_saves_count == 0
    assert obj.is_initial_cqrs_save


def test_a_failing_reset_override_does_not_stop_the_messages(monkeypatch, published, cqrs_log):
    """A ``reset_cqrs_saves_count`` override that raises is logged; the transaction's
    messages are still published."""

    def reset(self):
        raise RuntimeError('broken override')

    monkeypatch.setattr(Counter, 'reset_cqrs_saves_count', reset)
    with transaction.atomic():
        Counter.objects.create(id=1, value=0)
        Counter.objects.create(id=2, value=0)
    assert [body['instance_pk'] for _, body in published()] == [1, 2]
    assert any('saves count of pk = 1 not reset' in line for line in cqrs_log())
