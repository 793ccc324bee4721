"""The broker transports' ``produce``, and the one retry policy of every publisher: how long
to wait before trying the broker again."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dj_cqrs import signals
from dj_cqrs.broker_urls import mask_url
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import PublishError
from dj_cqrs.routing import routing_key_for
from dj_cqrs.transport.base import confirms_required
from dj_cqrs.transport.mixins import log_unroutable

if TYPE_CHECKING:
    from dj_cqrs.transport.background import BackgroundPublisher

logger = logging.getLogger(LOGGER_NAME)

FIRST = 0.2
"""Seconds before the second retry; each later one waits twice as long..."""
CAP = 2.0
"""...up to this many seconds."""


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): at once, then 0.4 s doubling to 2 s."""
    if attempt <= 0:
        return 0.0
    return min(FIRST * 2 ** min(attempt, 16), CAP)


PERMANENT_REPLY_CODES = frozenset({403, 406, 530})
"""AMQP channel/connection closes that publishing the same message again cannot cure:
ACCESS_REFUSED (no permission on the exchange), PRECONDITION_FAILED (an exchange of another
type, a message over the broker's ``max_message_size``), NOT_ALLOWED."""


def is_permanent(reply_code: int | None) -> bool:
    """Whether a broker refusal with ``reply_code`` is final: keep the message, do not retry."""
    return reply_code in PERMANENT_REPLY_CODES


def produce(
    sender: Any,
    payload: Any,
    background: Callable[[], BackgroundPublisher],
    attempt: Callable[[Any, str], bool],
    retryable: Callable[[Exception], bool],
) -> bool:
    """With async confirms (outside :func:`~dj_cqrs.transport.base.waiting_for_confirms`, the
    outbox) the publishing thread ``background()`` publishes it. Else
    ``attempt(payload, routing_key)`` (True when the broker returned the message as
    unroutable), tried again after :func:`backoff` up to ``CQRS_PUBLISH_RETRIES`` times while
    the error is ``retryable``; then a PublishError."""
    settings = get_settings()
    routing_key = routing_key_for(payload, settings.queue, settings.dead_letter_queue)
    if settings.master.publish_confirms == 'async' and not confirms_required():
        if background().submit(sender, payload, routing_key):
            return True  # published (or kept in the outbox) by the background thread
    retries = settings.master.publish_retries
    started = time.monotonic()
    for count in itertools.count():
        try:
            returned = attempt(payload, routing_key)
            break
        except Exception as err:
            if count < retries and retryable(err):
                logger.warning(
                    "CQRS couldn't be published: pk = %s (%s). Error: %s. Reconnect...",
                    payload.pk,
                    payload.cqrs_id,
                    type(err).__name__,
                )
                time.sleep(backoff(count))
                continue
            # No message_publish_failed here: the caller (the outbox, dj_cqrs.outbox.sending)
            # decides what happens to the message and announces the failure once, with ``kept``.
            raise PublishError(
                mask_url(
                    f"CQRS couldn't be published: pk = {payload.pk} ({payload.cqrs_id}) "
                    f'to {sender.broker_description()}: {type(err).__name__}: {err}'
                ),
                payload,
            ) from err
    if returned:
        log_unroutable(payload, routing_key)
        return False
    signals.message_published.send(sender, payload=payload, duration=time.monotonic() - started)
    return True
