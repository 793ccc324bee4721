"""What a log line may quote of a message: short, whatever the message holds.

A pk or a correlation id comes from the message, so it may be megabytes long; a line that
quoted it whole would multiply a hostile message's size in the logs at every retry.
"""

from __future__ import annotations

from typing import cast

LOG_QUOTE_LIMIT = 200
"""Characters of a value a log line quotes; longer ones are cut and marked."""


def quote_for_log(value: object, limit: int = LOG_QUOTE_LIMIT) -> object:
    """``value`` as a log line should print it: unchanged if short, else its cut ``str``."""
    kind = type(value)
    if value is None or kind is int or kind is bool:
        return value
    text = cast('str | bytes', value) if kind is str or kind is bytes else str(value)
    if len(text) <= limit:
        return value
    head = text[:limit]
    shown = head if isinstance(head, str) else repr(head)
    return f'{shown}... ({len(text)} chars)'


BODY_LOG_LIMIT = 2000
"""Characters of a message body a log line quotes."""


def body_for_log(body: bytes | str) -> str:
    """``repr`` of a body for a log line, built from its head only (bodies may be megabytes)."""
    text = repr(body[:BODY_LOG_LIMIT])
    if len(body) > BODY_LOG_LIMIT:
        text = f'{text[:BODY_LOG_LIMIT]}... ({len(body)} bytes)'
    return text
