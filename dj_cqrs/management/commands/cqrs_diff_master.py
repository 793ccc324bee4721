"""``cqrs_diff_master``: stream ``[[pk, revision], ...]`` of master rows (diff step 1)."""

from dj_cqrs.management.diff import SourceCommand, master_revisions
from dj_cqrs.management.utils import master_model


class Command(SourceCommand):
    help = 'Diff of a CQRS model: the master side (pipe into cqrs_diff_replica).'
    side = 'master'
    find_model = staticmethod(master_model)
    batches = staticmethod(master_revisions)
