"""``manage.py cqrs_dead_letters`` for every broker transport: count, dump, retry and purge
over the few primitives of one open dead-letter queue."""

from __future__ import annotations

import datetime
import logging
import time
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.constants import DEFAULT_MASTER_MESSAGE_TTL, LOGGER_NAME
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PayloadError
from dj_cqrs.protocols import DeadLetterReport
from dj_cqrs.quoting import body_for_log

logger = logging.getLogger(LOGGER_NAME)


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


class DeadLettersMixin:
    """The ``dead_letters_*`` methods of a transport. Its ``_dead_letter_queue()`` opens the
    queue: an object with ``count()``, ``take(limit)`` (unacked ``(message, body)`` pairs),
    ``put_back(messages)``, ``publish(payload, body)`` (confirmed), ``remove(message)`` and
    ``purge()``."""

    supports_dead_letters: ClassVar[bool] = True

    @classmethod
    def _dead_letter_queue(cls) -> AbstractContextManager[Any]:
        raise NotImplementedError

    @classmethod
    def dead_letters_count(cls) -> int:
        with cls._dead_letter_queue() as queue:
            return queue.count()

    @classmethod
    def dead_letters_dump(cls) -> list[bytes]:
        """The dead letters' bodies; the messages stay in the queue."""
        with cls._dead_letter_queue() as queue:
            taken = list(queue.take(queue.count()))
            queue.put_back([message for message, _ in taken])
            return [body for _, body in taken]

    @classmethod
    def dead_letters_retry(cls, report: DeadLetterReport | None = None) -> int:
        """Publish each dead letter back (:func:`retry_payload`, confirmed), then remove it;
        returns how many. A body that is not a message is logged and stays."""
        with cls._dead_letter_queue() as queue:
            total = queue.count()
            kept: list[Any] = []
            retried = 0
            try:
                for index, (message, body) in enumerate(queue.take(total), start=1):
                    try:
                        payload = retry_payload(body)
                    except PayloadError as err:
                        logger.error(
                            "CQRS dead letter couldn't be parsed: %s. (%s) It stays.",
                            body_for_log(body),
                            err,
                        )
                        kept.append(message)
                        continue
                    new_body = payload.encode()
                    started = time.monotonic()
                    queue.publish(payload, new_body)
                    duration = time.monotonic() - started
                    signals.message_published.send(cls, payload=payload, duration=duration)
                    queue.remove(message)
                    retried += 1
                    if report is not None:
                        report(index, total, new_body)
                return retried
            finally:
                queue.put_back(kept)

    @classmethod
    def dead_letters_purge(cls) -> int:
        """Drop every dead letter; returns how many there were."""
        with cls._dead_letter_queue() as queue:
            total = queue.count()
            if total:
                queue.purge()
            return total
