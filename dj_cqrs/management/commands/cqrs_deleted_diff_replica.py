"""``cqrs_deleted_diff_replica``: stream the replica's pks (deleted-rows step 1)."""

from dj_cqrs.management.diff import SourceCommand, replica_pks
from dj_cqrs.management.utils import replica_model


class Command(SourceCommand):
    help = 'Diff of deleted rows of a CQRS model: the replica side.'
    side = 'replica'
    find_model = staticmethod(replica_model)
    batches = staticmethod(replica_pks)
