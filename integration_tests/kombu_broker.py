"""The harness's KombuTransport entries: ``kombu_amqp`` (RabbitMQ) and ``kombu_redis`` (Redis).

``harness.TRANSPORTS`` takes these factories. Over RabbitMQ the queues are managed with the
RabbitMQ helpers; over Redis with a plain Redis client (Kombu keeps a queue in a list named
after it and the bindings of an exchange in the set ``_kombu.binding.<exchange>``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672//'
REDIS_DB = 12
REDIS_URL = f'redis://127.0.0.1:6379/{REDIS_DB}'
_SEP = '\x06\x16'  # Kombu's separator inside a Redis binding entry


def kombu_amqp_spec() -> Any:
    from integration_tests import rabbit
    from integration_tests.harness import TransportSpec

    def consumers(queue: str) -> int | None:
        counts = rabbit.queue_counts(queue)
        return 0 if counts is None else counts[1]

    return TransportSpec(
        name='kombu_amqp',
        path='dj_cqrs.transport.KombuTransport',
        url=AMQP_URL,
        services=('rabbitmq',),
        purge=lambda queues: rabbit.purge(*queues),
        delete=lambda queues: rabbit.delete(*queues),
        consumers=consumers,
        delete_exchange=rabbit.delete_exchange,
    )


def _redis() -> Any:
    import redis

    return redis.Redis(host='127.0.0.1', port=6379, db=REDIS_DB)


def _queue_keys(client: Any, queue: str) -> list[bytes]:
    # A queue is one list per priority: '<queue>' and '<queue>\x06\x16<n>'.
    return [key for key in client.scan_iter(match=f'{queue}*') if key in _names(client, queue)]


def _names(client: Any, queue: str) -> set[bytes]:
    names = {queue.encode()}
    names.update(f'{queue}{_SEP}{n}'.encode() for n in range(10))
    return names


def redis_purge(queues: Iterable[str]) -> None:
    with _redis() as client:
        for queue in queues:
            keys = _queue_keys(client, queue)
            if keys:
                client.delete(*keys)


def redis_bound(queue: str) -> bool:
    """Whether a worker has bound ``queue`` to an exchange (messages then wait for it)."""
    with _redis() as client:
        for key in client.scan_iter(match='_kombu.binding.*'):
            if any(m.endswith(f'{_SEP}{queue}'.encode()) for m in client.smembers(key)):
                return True
    return False


def redis_delete_exchange(exchange: str) -> None:
    with _redis() as client:
        client.delete(f'_kombu.binding.{exchange}')


def kombu_redis_spec() -> Any:
    from integration_tests.harness import TransportSpec

    def consumers(queue: str) -> int | None:
        # Redis cannot count consumers. Once a worker has bound the queue, published
        # messages wait in it for the workers, which is all the tests need to go on.
        return sys.maxsize if redis_bound(queue) else 0

    return TransportSpec(
        name='kombu_redis',
        path='dj_cqrs.transport.KombuTransport',
        url=REDIS_URL,
        services=('redis',),
        purge=redis_purge,
        delete=redis_purge,
        consumers=consumers,
        delete_exchange=redis_delete_exchange,
    )


KOMBU_TRANSPORTS: dict[str, Callable[[], Any]] = {
    'kombu_amqp': kombu_amqp_spec,
    'kombu_redis': kombu_redis_spec,
}
