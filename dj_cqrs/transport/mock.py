"""``TransportMock``: returns what it is given; applies nothing (as in django-cqrs 3.1)."""

from __future__ import annotations

from typing import Any

from dj_cqrs.transport.base import BaseTransport


class TransportMock(BaseTransport):
    @staticmethod
    def produce(payload: Any) -> Any:
        return TransportMock.consume(payload)

    @staticmethod
    def consume(payload: Any = None, **kwargs: Any) -> Any:
        return payload

    @staticmethod
    def clean_connection(*args: Any, **kwargs: Any) -> None:
        return None
