"""Decide what becomes of one consumed message: decode it, apply it, or say why not."""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME, SIGNAL_TYPES, SignalType
from dj_cqrs.consumer import route
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PayloadError, UnusablePayloadError
from dj_cqrs.protocols import ReplicaModel
from dj_cqrs.quoting import body_for_log, quote_for_log
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.routing import queue_from_routing_key
from dj_cqrs.values import master_time
from dj_cqrs.wire import decode_body

logger = logging.getLogger(LOGGER_NAME)


class Action(enum.Enum):
    """What the transport must do with the delivery."""

    ACK = 'ack'  # done (applied, or deliberately ignored)
    REJECT = 'reject'  # not a usable message: reject without requeue (logged)
    RETRY = 'retry'  # failed: publish again with ``retries + 1`` after ``delay`` seconds
    DEAD_LETTER = 'dead_letter'  # failed for good or expired: to the dead-letter queue


@dataclass
class Outcome:
    action: Action
    payload: TransportPayload | None = None
    delay: float = 0.0
    reason: str = ''
    error: BaseException | None = None


def decode(
    body: bytes | str, routing_key: str | None = None, sender: object = None
) -> TransportPayload | Outcome:
    """The payload of a delivery, or a REJECT outcome saying why there is none."""
    replica = get_settings().replica
    try:
        payload = TransportPayload.decode(
            body, max_size=replica.max_message_size, max_depth=replica.max_message_depth
        )
    except UnusablePayloadError as err:
        return unusable(err.payload, str(err), routing_key, sender)  # type: ignore[arg-type]
    except PayloadError as err:
        reason = str(err)
        if reason.endswith("isn't found in body"):
            logger.error("CQRS couldn't proceed, %s: %s.", reason, body_for_log(body))
        else:
            logger.error("CQRS couldn't be parsed: %s. (%s)", body_for_log(body), reason)
        signals.message_rejected.send(sender, payload=None, body=body, reason=reason)
        return Outcome(Action.REJECT, reason=reason)
    # Kept (in the payload's ``__dict__``) to restore its data if a hook changed it and it is
    # sent again: not part of TransportPayload's declared attributes.
    vars(payload)['_body'] = body
    if payload.signal_type == SignalType.SYNC and routing_key:
        payload._queue = queue_from_routing_key(routing_key, payload.cqrs_id)
    payload.routing_key = routing_key
    return payload


def unusable(
    payload: TransportPayload, reason: str, routing_key: str | None = None, sender: object = None
) -> Outcome:
    """A message that can never apply: to the dead letters at once (no retries), one log line."""
    payload.routing_key = routing_key
    logger.error(
        'CQRS message can never apply, moved to the dead letters: %s: pk = %s (%s).',
        reason,
        quote_for_log(payload.pk),
        payload.cqrs_id,
    )
    return Outcome(Action.DEAD_LETTER, payload, reason=reason)


def handle(body: bytes | str, routing_key: str | None = None, sender: object = None) -> Outcome:
    """Decode and apply one delivery."""
    decoded = decode(body, routing_key, sender=sender)
    if isinstance(decoded, Outcome):
        return decoded
    return apply(decoded, sender=sender)


def crash_outcome(body: bytes | str, routing_key: str | None, err: BaseException) -> Outcome:
    """The outcome of a delivery whose handling raised (a bug, not a bad message): a message
    that decodes is kept in the dead letters; one that does not is rejected (logged)."""
    try:
        decoded = decode(body, routing_key)
    except Exception:
        logger.exception("CQRS couldn't be decoded after a consumer error; it is rejected.")
        return Outcome(Action.REJECT, reason=f'consumer error: {err}', error=err)
    if isinstance(decoded, Outcome):
        return decoded
    return Outcome(Action.DEAD_LETTER, decoded, reason=f'consumer error: {err}', error=err)


def apply(payload: TransportPayload, sender: object = None) -> Outcome:
    """Apply a decoded payload and decide what happens to its delivery."""
    # The lifecycle log lines are written by receivers (dj_cqrs.observability.logging).
    signals.message_received.send(sender, payload=payload, routing_key=payload.routing_key)

    if payload.signal_type not in SIGNAL_TYPES:
        reason = f'Bad signal type "{payload.signal_type}" for CQRS_ID "{payload.cqrs_id}".'
        logger.error(reason)
        return Outcome(Action.DEAD_LETTER, payload, reason=reason)
    model = ReplicaRegistry.models.get(payload.cqrs_id)
    if model is None:
        reason = f'Model for cqrs_id {payload.cqrs_id} is not found.'
        logger.error(reason)
        signals.message_rejected.send(sender, payload=payload, body=None, reason=reason)
        return Outcome(Action.REJECT, payload, reason=reason)
    if payload.is_expired():
        return Outcome(Action.DEAD_LETTER, payload, reason='expired')

    started = time.monotonic()
    error: BaseException | None = None
    result: object = None
    try:
        # One decoded here from a body goes to the hooks without a copy (see _restore).
        data = (payload.instance_data, payload.previous_data, payload.meta)
        if getattr(payload, '_body', None) is None:
            data = tuple(map(route.copy_tree, data))
        result = route.write(model, payload.signal_type, *data, payload.queue)
    except UnusablePayloadError as err:
        _restore(payload)
        return unusable(payload, str(err), payload.routing_key, sender)
    except Exception as err:
        error = err
        logger.exception('CQRS service exception')
    duration = time.monotonic() - started
    if result and error is None:
        if signals.message_applied.receivers:
            signals.message_applied.send(
                sender, payload=payload, duration=duration, lag=replication_lag(payload)
            )
        return Outcome(Action.ACK, payload)
    _restore(payload)
    return failed(payload, model, error, sender=sender, duration=duration)


def _restore(payload: TransportPayload) -> None:
    """Put back the data of a payload decoded from a body, as the body holds it: the replica's
    hooks had it without a copy and may have changed it; a retry or a dead letter must carry
    the message as it came."""
    body = getattr(payload, '_body', None)
    if body is None:
        return
    pristine = decode_body(body)
    payload._instance_data = pristine['instance_data']
    payload._previous_data = pristine.get('previous_data')
    payload._meta = pristine.get('meta')


def failed(
    payload: TransportPayload,
    model: ReplicaModel,
    error: BaseException | None,
    sender: object = None,
    duration: float | None = None,
) -> Outcome:
    """A message that did not apply: retry it later or give it up to the dead letters."""
    signals.message_failed.send(
        sender, payload=payload, error=error, retries=payload.retries, duration=duration
    )
    if model.should_retry_cqrs(payload.retries, error):
        delay = model.get_cqrs_retry_delay(payload.retries)
        return Outcome(Action.RETRY, payload, delay=delay, error=error)
    return Outcome(Action.DEAD_LETTER, payload, reason='retries exhausted', error=error)


def replication_lag(payload: TransportPayload, now: datetime | None = None) -> float | None:
    """Seconds between the master's change (``cqrs_updated``) and ``now``."""
    moment = master_time((payload.instance_data or {}).get('cqrs_updated'))
    return None if moment is None else ((now or timezone.now()) - moment).total_seconds()
