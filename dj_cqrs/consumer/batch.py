"""Apply many deliveries in one database transaction, with the outcome of each one.

SAVE and SYNC messages of models on the default write path (:mod:`dj_cqrs.replica.writepath`)
are written in bulk (:mod:`dj_cqrs.replica.writes`) under the revision rules of one-by-one apply;
each message's log lines are kept and written only once the transaction has committed.
Everything else (other models, DELETEs and every message of their rows, and every message of a
bulk group whose transaction failed, so that a bad message fails alone) goes one by one through
:func:`dj_cqrs.consumer.handler.apply`.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from django.db import close_old_connections, connections, router, transaction
from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME, SignalType
from dj_cqrs.consumer import handler
from dj_cqrs.consumer.handler import Action, Outcome
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.replica import rowlocks, tombstones, writes
from dj_cqrs.replica.manager import LogLines
from dj_cqrs.replica.plan import plan_for
from dj_cqrs.replica.writepath import default_write_path

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import ReplicaMixin

logger = logging.getLogger(LOGGER_NAME)

__all__ = ['Delivery', 'apply_batch', 'bulk_eligible', 'one_by_one', 'take_batch']


@dataclass(frozen=True)
class Delivery:
    """A delivery as the batch engine needs it (transports may pass any object with these)."""

    body: bytes
    routing_key: str | None = None


bulk_eligible = default_write_path
"""Whether messages of ``model`` may be written in bulk (else: one by one)."""


def one_by_one() -> bool:
    """Whether this process applies every message in its own transaction."""
    return get_settings().replica.batch_size <= 1


def take_batch(pending: deque[Any], size: int) -> list[Any]:
    """Take up to ``size`` deliveries from the left of ``pending``, and (but for the first) no
    more body bytes than ``CQRS_MAX_MESSAGE_SIZE``: a batch is decoded whole, so its bytes bound
    the worker's memory."""
    budget = get_settings().replica.max_message_size
    batch = [pending.popleft()]
    used = len(batch[0].body)
    while pending and len(batch) < size:
        used += len(pending[0].body)
        if used > budget:
            break
        batch.append(pending.popleft())
    return batch


@dataclass
class _Work:
    index: int
    payload: TransportPayload
    model: type[ReplicaMixin]
    lines: LogLines = field(default_factory=list)  # written after commit, in this order
    applied: bool = False


def _body_and_key(delivery: Any) -> tuple[Any, str | None]:
    if isinstance(delivery, tuple):
        body, routing_key = delivery
        return body, routing_key
    return delivery.body, getattr(delivery, 'routing_key', None)


def apply_batch(deliveries: Iterable[Any], sender: Any = None) -> list[Outcome]:
    """Apply deliveries (objects with ``body``/``routing_key``, or such pairs): one outcome each,
    in order, as one-by-one apply would give (exactly :func:`.handler.handle` per delivery with
    ``CQRS_BATCH_SIZE`` 1)."""
    items = [_body_and_key(d) for d in deliveries]
    if not items or one_by_one():
        return [handler.handle(body, key, sender=sender) for body, key in items]

    from dj_cqrs.observability import lag

    with lag.deferred():
        outcomes = _apply_many(items, sender)
    lag.record_batch(
        [o.payload for o in outcomes if o.action is Action.ACK and o.payload is not None],
        sender=sender,
    )
    return outcomes


def _apply_many(items: list[tuple[Any, str | None]], sender: Any) -> list[Outcome]:
    outcomes: dict[int, Outcome] = {}
    solo: list[tuple[int, TransportPayload]] = []
    bulk: list[_Work] = []
    eligible: dict[type[ReplicaMixin], bool] = {}  # bulk_eligible, once per batch
    for index, (body, routing_key) in enumerate(items):
        decoded = handler.decode(body, routing_key, sender=sender)
        if isinstance(decoded, Outcome):
            outcomes[index] = decoded
            continue
        model = _bulk_model(decoded, eligible)
        if model is None:
            solo.append((index, decoded))
        else:
            bulk.append(_Work(index, decoded, model))

    # DELETEs, and every message of a row that has one, go one by one, in order.
    deleted = {
        (w.payload.cqrs_id, str(w.payload.pk))
        for w in bulk
        if w.payload.signal_type == SignalType.DELETE
    }
    by_alias: dict[str, list[_Work]] = {}
    for work in bulk:
        if deleted and (work.payload.cqrs_id, str(work.payload.pk)) in deleted:
            solo.append((work.index, work.payload))
        else:
            by_alias.setdefault(router.db_for_write(work.model), []).append(work)
    for alias, works in by_alias.items():
        for work, outcome in _apply_group(alias, works, sender):
            outcomes[work.index] = outcome

    for index, payload in sorted(solo, key=lambda pair: pair[0]):
        outcomes[index] = handler.apply(payload, sender=sender)
    return [outcomes[index] for index in range(len(items))]


def _bulk_model(
    payload: TransportPayload, eligible: dict[type[ReplicaMixin], bool]
) -> type[ReplicaMixin] | None:
    signal_type = payload.signal_type
    if signal_type not in (SignalType.SAVE, SignalType.SYNC, SignalType.DELETE):
        return None
    registered = ReplicaRegistry.models.get(payload.cqrs_id)
    if registered is None:
        return None
    # Registered replicas are Django models (ReplicaMeta); a RawReplicaMixin model is one too.
    model = cast('type[ReplicaMixin]', registered)
    allowed = eligible.get(model)
    if allowed is None:
        allowed = eligible[model] = bulk_eligible(model)
    if not allowed:
        return None
    if signal_type == SignalType.SYNC and model.CQRS_ONLY_DIRECT_SYNCS:
        return None
    if payload.is_expired():
        return None
    return model


def _apply_group(alias: str, works: list[_Work], sender: Any) -> list[tuple[_Work, Outcome]]:
    """One transaction for the group; on any error, every message of it one by one."""
    from dj_cqrs.replica.timeouts import apply_query_timeouts

    if not connections[alias].in_atomic_block:
        close_old_connections()  # like a request: drop broken or expired connections
    started = time.monotonic()
    by_model: dict[type[ReplicaMixin], list[_Work]] = {}
    for work in works:
        by_model.setdefault(work.model, []).append(work)
    try:
        for model in by_model:
            apply_query_timeouts(model)
        with transaction.atomic(using=alias):
            for model, model_works in by_model.items():
                _write_model(alias, model, model_works)
    except Exception as err:  # any failure: the one-by-one path isolates the bad message
        rowlocks.release_ended(connections[alias])
        logger.debug('CQRS batch of %s messages falls back to one by one: %r', len(works), err)
        return [(w, handler.apply(w.payload, sender=sender)) for w in works]
    duration = time.monotonic() - started
    now = timezone.now()
    return [(w, _settle(w, sender, duration, now)) for w in works]


class _Tombstoned(Exception):
    """Rows of the group were deleted by this replica: the group goes one by one."""


def _write_model(alias: str, model: type[ReplicaMixin], works: list[_Work]) -> None:
    """Run the revision rules in memory for ``works`` (delivery order), then write in bulk."""
    manager = model.cqrs
    pk_name = plan_for(model).pk_name
    to_python = model._meta.pk.to_python
    changes = []
    for work in works:
        mapped = manager._map_save_data(work.payload.instance_data, work.lines)
        if mapped is not None:
            work.applied = True
            sync = work.payload.signal_type == SignalType.SYNC
            changes.append(writes.Change(to_python(mapped[pk_name]), mapped, sync, work.lines))
    if not changes:
        return
    connection = connections[alias]
    keys = list(dict.fromkeys(change.key for change in changes))
    revisions = writes.read_revisions(model, connection, keys)
    absent = [key for key in keys if key not in revisions]
    # The tombstones' row locks first: a DELETE applied meanwhile by another worker cannot
    # slip between this check and the INSERT.
    if absent:
        tombstones.lock_rows(model, absent, alias)
        if tombstones.tombstoned(model, absent, alias):
            raise _Tombstoned
    writes.write_changes(model, connection, changes, revisions)


def _settle(work: _Work, sender: Any, duration: float, now: datetime.datetime) -> Outcome:
    """After commit: the message's signals and kept log lines in one-by-one order, its outcome."""
    payload = work.payload
    signals.message_received.send(sender, payload=payload, routing_key=payload.routing_key)
    for level, message, args in work.lines:
        logger.log(level, message, *args)
    if not work.applied:
        return handler.failed(payload, work.model, None, sender=sender, duration=duration)
    if signals.message_applied.receivers:
        lag = handler.replication_lag(payload, now)
        signals.message_applied.send(sender, payload=payload, duration=duration, lag=lag)
    return Outcome(Action.ACK, payload)
