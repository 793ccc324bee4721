"""``BaseTransport``: the class-level API every transport implements (users subclass it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from dj_cqrs.exceptions import TransportError
from dj_cqrs.threadlocal import local_value

_confirms = threading.local()


@contextmanager
def waiting_for_confirms() -> Iterator[None]:
    """In this block, ``produce`` returns only once the broker has confirmed the message (for
    the outbox, which deletes its copy when ``produce`` returns)."""
    with local_value(_confirms, 'required', True):
        yield


def confirms_required() -> bool:
    """Whether the current thread is inside :func:`waiting_for_confirms`."""
    return getattr(_confirms, 'required', False)


PROBE_TIMEOUT = 5.0
"""Seconds ``queue_stats`` waits for the broker before it counts as unreachable."""


class QueueNotDeclared(TransportError):
    """The queue asked about does not exist on the broker (yet)."""


class BaseTransport:
    """A transport publishes payloads and runs consumers, through class-level methods; the
    ``supports_*``/``applies_*`` flags declare what else it can do (defining ``queue_stats``
    or ``dead_letters_count`` declares that capability)."""

    consumers: ClassVar[dict[str, Any]] = {}

    supports_queue_stats: ClassVar[bool] = False
    """``queue_stats()`` reads the broker's queues (``manage.py cqrs_status``)."""
    supports_dead_letters: ClassVar[bool] = False
    """The ``dead_letters_*`` methods work (``manage.py cqrs_dead_letters``, ``cqrs_status``)."""
    applies_in_process: ClassVar[bool] = False
    """``produce`` applies the message at once, in the caller's process and transaction."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if 'supports_queue_stats' not in vars(cls) and 'queue_stats' in vars(cls):
            cls.supports_queue_stats = True
        if 'supports_dead_letters' not in vars(cls) and 'dead_letters_count' in vars(cls):
            cls.supports_dead_letters = True

    @classmethod
    def broker_description(cls) -> str:
        """Where this transport's broker is, for people (passwords masked)."""
        return cls.__name__

    @classmethod
    def queue_stats(cls, queue: str) -> tuple[int | None, int | None]:
        """(messages waiting, consumers) of one of this service's queues; None when unknown.
        Raises :class:`QueueNotDeclared` for a queue the broker does not have."""
        raise NotImplementedError(f'{cls.__name__} cannot read its queues.')

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
        """Publish (confirmed) every dead letter back to this service's queue with ``retries``
        0, then remove it; ``report(index, total, body)`` after each. Returns how many."""
        raise NotImplementedError(f'{cls.__name__} has no dead-letter queue.')

    @classmethod
    def dead_letters_purge(cls) -> int:
        """Drop every dead letter; returns how many there were."""
        raise NotImplementedError(f'{cls.__name__} has no dead-letter queue.')
