"""The one retry policy of every publisher: how long to wait before trying the broker again.

``RabbitMQTransport`` and ``KombuTransport`` (synchronous publishing) and the background
publisher (:mod:`dj_cqrs.transport.async_publisher`: reconnecting, re-publishing a nacked
message, reopening a channel the broker closed) all wait :func:`backoff` seconds.
"""

from __future__ import annotations

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
