"""Hand-made golden_parent bodies, delivered through the consumer's handler, for the delete and
tombstone tests."""

from __future__ import annotations

import datetime
from typing import Any

from dj_cqrs.consumer import handler
from dj_cqrs.wire import encode_body
from tests.dj_replica.models import GoldenParentReplica

# Recent, so the tombstones these deletes leave are younger than CQRS_TOMBSTONE_TTL: a worker
# prunes older ones (at most hourly, the first time as soon as a process records one).
T0 = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
T0 -= datetime.timedelta(hours=1)


def at(seconds: float) -> str:
    """The master's time ``seconds`` after T0, as the wire carries it."""
    return str(T0 + datetime.timedelta(seconds=seconds))


def parent_body(signal: str, pk: int, revision: Any, updated: str, name: str = 'n') -> bytes:
    """A golden_parent SAVE or DELETE body with this revision and master time."""
    data = {'id': pk, 'cqrs_revision': revision, 'cqrs_updated': updated}
    if signal != 'DELETE':
        data['name'] = name
    return encode_body(
        {
            'signal_type': signal,
            'cqrs_id': 'golden_parent',
            'instance_data': data,
            'previous_data': None,
            'instance_pk': pk,
            'correlation_id': None,
            'retries': 0,
            'expires': None,
            'meta': None,
        }
    )


def deliver(*bodies: bytes, routing_key: str = 'golden_parent') -> list[handler.Action]:
    """What the consumer decides for each body, applied in order."""
    return [handler.handle(body, routing_key).action for body in bodies]


def parents() -> dict[int, tuple[str, int]]:
    """The replica's golden_parent rows: pk -> (name, revision)."""
    return {r.id: (r.name, r.cqrs_revision) for r in GoldenParentReplica.objects.all()}
