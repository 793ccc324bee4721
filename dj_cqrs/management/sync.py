"""Re-publishing rows as SYNC messages (admin action, ``cqrs_sync`` and ``cqrs_diff_sync``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import close_old_connections, connections, models, router

from dj_cqrs.management.progress import Progress
from dj_cqrs.management.utils import Write, keyset_batches
from dj_cqrs.protocols import MasterModel

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin


@dataclass
class SyncResult:
    """What a sync run did: ``synced`` rows published, ``failed`` the ones that were not."""

    synced: int = 0
    failed: list[MasterModel] = field(default_factory=list)
    processed: int = 0

    def add(self, instance: MasterModel, published: bool) -> None:
        self.processed += 1
        if published:
            self.synced += 1
        else:
            self.failed.append(instance)


def sync_instances(instances: Iterable[MasterModel], queue: str | None = None) -> SyncResult:
    """Call ``cqrs_sync(queue=...)`` on each instance; collect the ones that did not publish."""
    result = SyncResult()
    for instance in instances:
        result.add(instance, instance.cqrs_sync(queue=queue))
    return result


def sync_queryset(
    queryset: models.QuerySet[RawMasterMixin],
    *,
    queue: str | None = None,
    batch_size: int = 10000,
    progress: bool = False,
    write: Write,
) -> SyncResult | None:
    """SYNC every row of ``queryset``, printing like ``cqrs_sync``; None when it has no rows.

    A row that fails is reported on ``write`` and the run goes on.
    """
    total = queryset.count()
    if not total:
        return None
    if progress:
        write(f'Processing {total} records with batch size {batch_size}\n')
    tracker = Progress(total, write, enabled=progress)
    result = SyncResult()
    alias = router.db_for_read(queryset.model)
    pages = keyset_batches(queryset.model.relate_cqrs_serialization(queryset), batch_size)
    while True:
        # A connection that went away between batches is replaced before the next one.
        connection = connections[alias]
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        batch = next(pages, None)
        if batch is None:
            return result
        for instance in batch:
            try:
                published = instance.cqrs_sync(queue=queue)
            except Exception as err:
                write(f'\nSync record failed for pk={instance.pk}: {type(err).__name__}: {err}\n')
                if not connections[alias].in_atomic_block:
                    # A broken connection is replaced (never inside the caller's transaction).
                    close_old_connections()
                published = False
            result.add(instance, published)
        tracker.advance(len(batch))


def done_lines(result: SyncResult | None) -> str:
    """The closing text of ``cqrs_sync`` (of a run that found no rows: None)."""
    if result is None:
        return 'No objects found for filter!'
    return f'Done!\n{result.synced} instance(s) synced.\n{result.processed} instance(s) processed.'
