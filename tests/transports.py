"""Transports for tests."""

from dj_cqrs.exceptions import PublishError
from dj_cqrs.transport.base import BaseTransport


class FailingTransport(BaseTransport):
    """Every publish fails, as a broker that is down would."""

    attempts = 0

    @classmethod
    def produce(cls, payload):
        cls.attempts += 1
        raise PublishError(f'broker down for pk={payload.pk}', payload)

    @staticmethod
    def clean_connection(*args, **kwargs):
        return None
