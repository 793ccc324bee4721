"""What an AMQP error means for the messages it hits: its text for a log line, which messages
a channel closed by the broker refuses for good, and what becomes of them."""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Iterable

from dj_cqrs.broker_urls import mask_url
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport.background import BackgroundPublisher, Item, attempted
from dj_cqrs.transport.retry import is_permanent

logger = logging.getLogger(LOGGER_NAME)

_TOO_LARGE = re.compile(r'message size (\d+) is larger than')


def error_text(err: BaseException) -> str:
    """``err`` for a log line or an outbox row; pika's connection workflow errors unwrapped to
    the last underlying cause (e.g. ``ConnectionRefusedError``, ``SSLCertVerificationError``)."""
    while True:
        if getattr(err, 'exceptions', None):
            err = err.exceptions[-1]  # type: ignore[attr-defined]
        elif isinstance(getattr(err, 'exception', None), BaseException):
            err = err.exception  # type: ignore[attr-defined]
        else:
            return f'{type(err).__name__}: {mask_url(str(err))}'


def check_short(value: str, what: str) -> None:
    """Refuse a value AMQP carries as a short string (at most 255 bytes)."""
    size = len(value.encode('utf-8'))
    if size > 255:
        raise ValueError(f'{what} is {size} bytes long; AMQP allows at most 255: {value!r}')


def split_refused(
    code: int, text: str, inflight: list[Item], waiting: Iterable[Item]
) -> tuple[list[Item], list[Item], collections.deque[Item]]:
    """``(refused, retried, still_waiting)`` after the broker closed the channel with ``code``.

    One message over the broker's ``max_message_size`` is refused alone; a permanent refusal
    (403, 404, ...) refuses every message for the exchanges it names (those waiting too), so
    they are kept instead of being published again and again; anything else is retried.
    """
    too_large = _TOO_LARGE.search(text) if code == 406 else None
    if too_large is not None:
        size = int(too_large.group(1))
        culprit = next((i for i in inflight if i.body is not None and len(i.body) == size), None)
        if culprit is not None:
            return [culprit], [i for i in inflight if i is not culprit], collections.deque(waiting)
    if is_permanent(code) and too_large is None:
        named = {i.exchange for i in inflight if f"'{i.exchange}'" in text}
        exchanges = named or {i.exchange for i in inflight}
        refused = [i for i in inflight if i.exchange in exchanges]
        retried = [i for i in inflight if i.exchange not in exchanges]
        waiting = list(waiting)
        refused += [i for i in waiting if i.exchange in exchanges]
        still = collections.deque(i for i in waiting if i.exchange not in exchanges)
        return refused, retried, still
    return [], inflight, collections.deque(waiting)


def keep_refused(owner: BackgroundPublisher, refused: list[Item], reason: str) -> None:
    """Keep in the outbox the messages the broker refused for good (not published again)."""
    # One line for the refusal; each message then gets its own ERROR line when it is kept
    # (message_publish_failed), with this reason.
    logger.warning(
        'CQRS async publisher: the broker refused %d message(s) (%s) %s; they are '
        'kept in the outbox, not published again.',
        len(refused),
        ', '.join(f'pk = {i.payload.pk} ({i.payload.cqrs_id})' for i in refused[:5])
        + (' ...' if len(refused) > 5 else ''),
        reason,
    )
    attempted(refused, f'refused by the broker: {reason}')
    owner._keep_many(refused, 'the broker refused it')
