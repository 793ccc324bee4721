"""``TransportMock``: returns what it is given; applies nothing (as in django-cqrs 3.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dj_cqrs.transport.base import BaseTransport

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload


class TransportMock(BaseTransport):
    @staticmethod
    def produce(payload: TransportPayload) -> TransportPayload | None:
        return TransportMock.consume(payload)

    @staticmethod
    def consume(
        payload: TransportPayload | None = None, **kwargs: object
    ) -> TransportPayload | None:
        return payload

    @staticmethod
    def clean_connection(*args: object, **kwargs: object) -> None:
        return None
