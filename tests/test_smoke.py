import pytest

from tests.dj_master.models import GoldenParent
from tests.dj_replica.models import GoldenParentReplica


@pytest.mark.django_db(transaction=True)
def test_create_update_delete_reach_replica(published):
    """A committed create, update and delete of a master row are mirrored by the replica."""
    parent = GoldenParent.objects.create(id=1, name='one')
    assert GoldenParentReplica.objects.get(id=1).name == 'one'
    parent.name = 'two'
    parent.save()
    replica = GoldenParentReplica.objects.get(id=1)
    assert (replica.name, replica.cqrs_revision) == ('two', 1)
    parent.delete()
    assert not GoldenParentReplica.objects.exists()
    assert [b['signal_type'] for _, b in published()] == ['SAVE', 'SAVE', 'DELETE']
