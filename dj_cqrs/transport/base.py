"""``BaseTransport``: the class-level API every transport implements (users subclass it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from dj_cqrs.threadlocal import local_value

_confirms = threading.local()


@contextmanager
def waiting_for_confirms() -> Iterator[None]:
    """In this block, ``produce`` returns only once the broker has confirmed the message.

    For callers that delete their own copy of a message when ``produce`` returns (the outbox
    relay, the transactional outbox): a transport that confirms in the background
    (``CQRS_PUBLISH_CONFIRMS = 'async'``) publishes synchronously here.
    """
    with local_value(_confirms, 'required', True):
        yield


def confirms_required() -> bool:
    """Whether the current thread is inside :func:`waiting_for_confirms`."""
    return getattr(_confirms, 'required', False)


class BaseTransport:
    """A transport publishes payloads and runs consumers, through class-level methods."""

    consumers: ClassVar[dict[str, Any]] = {}

    @staticmethod
    def produce(payload: Any) -> Any:
        """Publish one payload (raise :class:`dj_cqrs.exceptions.PublishError` on failure)."""
        raise NotImplementedError

    @staticmethod
    def consume(*args: Any, **kwargs: Any) -> Any:
        """Consume messages for this service's replica models (may run forever)."""
        raise NotImplementedError

    @staticmethod
    def clean_connection(*args: Any, **kwargs: Any) -> None:
        """Close this process's broker connections."""
        raise NotImplementedError

    # Dead letters (used by ``manage.py cqrs_dead_letters``). Broker transports implement them.

    @classmethod
    def dead_letters_count(cls) -> int:
        """How many messages wait in this service's dead-letter queue."""
        raise NotImplementedError(f'{cls.__name__} has no dead-letter queue.')

    @classmethod
    def dead_letters_dump(cls) -> list[bytes]:
        """The bodies waiting in the dead-letter queue (left in place)."""
        raise NotImplementedError(f'{cls.__name__} has no dead-letter queue.')

    @classmethod
    def dead_letters_retry(cls, report: Any = None) -> int:
        """Publish every dead letter back to this service's queue (``retries`` reset to 0).

        Each one is published (confirmed) before it is removed from the dead-letter queue.
        ``report(index, total, body)`` is called after each. Returns how many were retried.
        """
        raise NotImplementedError(f'{cls.__name__} has no dead-letter queue.')

    @classmethod
    def dead_letters_purge(cls) -> int:
        """Drop every dead letter; returns how many there were."""
        raise NotImplementedError(f'{cls.__name__} has no dead-letter queue.')
