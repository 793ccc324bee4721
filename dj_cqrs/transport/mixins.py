"""``LoggingMixin``: the original's transport log lines (logger ``django-cqrs``), which
subclasses may override to observe the message lifecycle. The words are the original's, as
plain strings (the original wrapped three of them in a tuple by accident)."""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING

from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.quoting import quote_for_log

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload

logger = logging.getLogger(LOGGER_NAME)


def _ids(payload: TransportPayload) -> tuple[object, str, object]:
    return (
        quote_for_log(payload.pk),
        payload.cqrs_id,
        quote_for_log(payload.correlation_id),
    )


def log_unroutable(payload: TransportPayload, routing_key: str) -> None:
    """The broker returned a message: no queue is bound to its routing key (all transports)."""
    logger.warning(
        'CQRS is unroutable: pk = %s (%s), routing_key = %s. '
        'No queue is bound to it; the broker dropped the message.',
        quote_for_log(payload.pk),
        payload.cqrs_id,
        routing_key,
    )


def _line(level: int, event: str) -> staticmethod[[TransportPayload], None]:
    """A log method of the shape most of the original's lines share."""

    def log(payload: TransportPayload) -> None:
        logger.log(level, f'CQRS is {event}: pk = %s (%s), correlation_id = %s.', *_ids(payload))

    return staticmethod(log)


class LoggingMixin:
    log_consumed = _line(logging.INFO, 'received')
    log_consumed_accepted = _line(logging.INFO, 'applied')
    log_consumed_denied = _line(logging.WARNING, 'denied')
    log_dead_letter = _line(logging.WARNING, 'added to dead letter queue')
    log_requeued = _line(logging.WARNING, 'requeued')
    log_produced = _line(logging.INFO, 'published')

    @staticmethod
    def log_consumed_failed(payload: TransportPayload) -> None:
        logger.warning(
            'CQRS is failed: pk = %s (%s), correlation_id = %s, retries = %s.',
            *_ids(payload),
            payload.retries,
        )

    @staticmethod
    def log_delayed(payload: TransportPayload, delay: float, eta: datetime.datetime) -> None:
        logger.warning(
            'CQRS is delayed: pk = %s (%s), correlation_id = %s, delay = %s sec, eta = %s.',
            *_ids(payload),
            delay,
            eta,
        )
