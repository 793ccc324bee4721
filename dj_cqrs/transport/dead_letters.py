"""``cqrs_dead_letters retry`` for every transport: what a retried dead letter is, and the loop."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.constants import DEFAULT_MASTER_MESSAGE_TTL, LOGGER_NAME
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PayloadError
from dj_cqrs.protocols import DeadLetterReport
from dj_cqrs.quoting import body_for_log

logger = logging.getLogger(LOGGER_NAME)

M = TypeVar('M')

Report = DeadLetterReport


def retry_payload(body: bytes | str) -> TransportPayload:
    """The message a dead letter is retried with: ``retries`` 0, sent to this service's queue,
    and, if it had an ``expires``, a fresh one a day from now (as the original, whatever the
    settings say: the dead letter is retried by a replica, not by its master)."""
    payload = TransportPayload.decode(body)
    if payload.expires:
        payload._expires = timezone.now() + datetime.timedelta(seconds=DEFAULT_MASTER_MESSAGE_TTL)
    payload.retries = 0
    payload.is_requeue = True
    return payload


def retry_all(
    messages: Iterable[tuple[M, bytes]],
    total: int,
    publish: Callable[[TransportPayload, bytes], object],
    remove: Callable[[M], object],
    sender: type,
    report: Report | None,
    kept: list[M],
) -> int:
    """Publish each dead letter back (:func:`retry_payload`, confirmed), then remove it;
    returns how many. A body that is not a message is logged and added to ``kept``."""
    retried = 0
    for index, (message, body) in enumerate(messages, start=1):
        try:
            payload = retry_payload(body)
        except PayloadError as err:
            logger.error(
                "CQRS dead letter couldn't be parsed: %s. (%s) It stays.", body_for_log(body), err
            )
            kept.append(message)
            continue
        new_body = payload.encode()
        started = time.monotonic()
        publish(payload, new_body)
        duration = time.monotonic() - started
        signals.message_published.send(sender, payload=payload, duration=duration)
        remove(message)
        retried += 1
        if report is not None:
            report(index, total, new_body)
    return retried
