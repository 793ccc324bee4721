"""Re-publishing rows as SYNC messages (admin action, ``cqrs_sync`` and ``cqrs_diff_sync``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import close_old_connections, connections, models, router

from dj_cqrs.management.progress import Progress
from dj_cqrs.management.utils import keyset_batches
from dj_cqrs.protocols import MasterModel

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin


@dataclass
class SyncResult:
    """What a sync run did: ``synced`` rows published, ``failed`` the ones that were not."""

    synced: int = 0
    failed: list[MasterModel] = field(default_factory=list)
    processed: int = 0


def sync_instances(instances: Iterable[MasterModel], queue: str | None = None) -> SyncResult:
    """Call ``cqrs_sync(queue=...)`` on each instance; collect the ones that did not publish."""
    result = SyncResult()
    for instance in instances:
        result.processed += 1
        if instance.cqrs_sync(queue=queue):
            result.synced += 1
        else:
            result.failed.append(instance)
    return result


def sync_queryset(
    model: type[RawMasterMixin],
    queryset: models.QuerySet[RawMasterMixin],
    *,
    queue: str | None = None,
    batch_size: int = 10000,
    progress: bool = False,
    write: Callable[[str], None],
) -> SyncResult:
    """SYNC every row of ``queryset`` (which must hold rows), printing like ``cqrs_sync``.

    Rows are read in pk order one batch at a time, through the model's
    ``relate_cqrs_serialization`` so serializer models need no query per row. A row that fails
    is reported (``'\\nSync record failed for pk=<pk>: <Class>: <message>'``) and the run goes
    on. ``write(text)`` prints ``text`` as it is (no newline added).
    """
    total = queryset.count()
    if progress:
        write(f'Processing {total} records with batch size {batch_size}\n')
    tracker = Progress(total, write, enabled=progress)
    result = SyncResult()
    related = model.relate_cqrs_serialization(queryset)
    alias = router.db_for_read(model)
    for batch in _batches(related, batch_size, alias):
        for instance in batch:
            result.processed += 1
            try:
                published = instance.cqrs_sync(queue=queue)
            except Exception as err:
                write(f'\nSync record failed for pk={instance.pk}: {type(err).__name__}: {err}\n')
                if not connections[alias].in_atomic_block:
                    # A broken connection is replaced (never inside the caller's transaction).
                    close_old_connections()
                result.failed.append(instance)
                continue
            if published:
                result.synced += 1
            else:
                result.failed.append(instance)
        tracker.advance(len(batch))
    return result


def _batches(
    queryset: models.QuerySet[RawMasterMixin], batch_size: int, alias: str
) -> Iterable[list[RawMasterMixin]]:
    """Keyset batches; a connection that went away between batches is replaced first."""
    pages = keyset_batches(queryset, batch_size)
    while True:
        connection = connections[alias]
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        try:
            batch = next(pages)
        except StopIteration:
            return
        yield batch


def done_lines(result: SyncResult) -> str:
    """The closing text of ``cqrs_sync``."""
    return f'Done!\n{result.synced} instance(s) synced.\n{result.processed} instance(s) processed.'


def sync_pks(
    model: type[RawMasterMixin],
    pks: list[object],
    *,
    queue: str | None,
    batch_size: int,
    progress: bool,
    write: Callable[[str], None],
) -> SyncResult | None:
    """SYNC the rows with these pks (any pk name, UUIDs as text); None when none exist."""
    queryset = model._default_manager.filter(pk__in=pks)
    if not queryset.exists():
        return None
    return sync_queryset(
        model, queryset, queue=queue, batch_size=batch_size, progress=progress, write=write
    )
