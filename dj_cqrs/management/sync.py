"""Re-publishing rows as SYNC messages (admin action, ``cqrs_sync`` and the diff tools)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SyncResult:
    synced: int = 0
    failed: list[Any] = field(default_factory=list)


def sync_instances(instances: Iterable[Any], queue: str | None = None) -> SyncResult:
    """Call ``cqrs_sync(queue=...)`` on each instance; collect the ones that did not publish."""
    result = SyncResult()
    for instance in instances:
        if instance.cqrs_sync(queue=queue):
            result.synced += 1
        else:
            result.failed.append(instance)
    return result
