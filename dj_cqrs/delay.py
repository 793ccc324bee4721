"""In-memory delay queue of a consumer worker: failed messages waiting for their retry."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from django.utils import timezone

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import ConfigurationError

T = TypeVar('T')


@dataclass(slots=True, eq=False)
class DelayMessage(Generic[T]):
    """A delivery held back until ``eta``: ``delivery_tag`` is what the transport settles it
    by (the consumer keeps the delivery itself there)."""

    delivery_tag: T
    payload: TransportPayload
    eta: datetime


class DelayQueue(Generic[T]):
    """Priority queue of :class:`DelayMessage` by ETA, optionally bounded."""

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and max_size <= 0:
            raise ConfigurationError('Delay queue max_size should be positive integer.')
        self._max_size = max_size
        self._queue: queue.PriorityQueue[tuple[float, int, DelayMessage[T]]] = queue.PriorityQueue()
        self._counter = 0

    def put(self, delay_message: DelayMessage[T]) -> None:
        if self.full():
            raise queue.Full('Delay queue is full')
        self._counter += 1
        self._queue.put((delay_message.eta.timestamp(), self._counter, delay_message))

    def get(self) -> DelayMessage[T]:
        """The message with the smallest ETA."""
        return self._queue.get()[2]

    def get_ready(self) -> Iterator[DelayMessage[T]]:
        """Yield, in ETA order, every message whose ETA has passed."""
        while self._queue.qsize():
            item = self._queue.get()
            if item[2].eta > timezone.now():
                self._queue.put(item)
                return
            yield item[2]

    def qsize(self) -> int:
        return self._queue.qsize()

    def full(self) -> bool:
        return self._max_size is not None and self._queue.qsize() >= self._max_size
