"""Fixtures of the KombuTransport tests: one broker per parameter, a worker run in bounds.

Each test gets its own exchange and queue names (random suffix) and deletes them afterwards,
so reruns and other suites sharing RabbitMQ or Redis do not see each other's messages.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import kombu
import pytest
from django.test import override_settings

from dj_cqrs import signals
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.kombu_consumer import KombuWorker
from tests.services import require

URLS = {
    'memory': 'memory://',
    'amqp': 'amqp://guest:guest@127.0.0.1:5672//',
    'redis': 'redis://127.0.0.1:6379/11',
}
SERVICES = {'amqp': 'rabbitmq', 'redis': 'redis'}

LIFECYCLE = (
    signals.message_applied,
    signals.message_failed,
    signals.message_delayed,
    signals.message_requeued,
    signals.message_dead_lettered,
    signals.message_rejected,
)


def kombu_settings(url: str, suffix: str, **overrides: Any) -> dict[str, Any]:
    replica = {'CQRS_MAX_RETRIES': 1, 'CQRS_RETRY_DELAY': 1, **overrides.pop('replica', {})}
    # The synchronous path: these tests look at the broker right after produce() returns
    # (test_kombu_async_publish.py covers the background publisher).
    master = {
        'CQRS_MESSAGE_TTL': 86400,
        'CQRS_PUBLISH_RETRIES': 1,
        'CQRS_PUBLISH_CONFIRMS': 'sync',
        **overrides.pop('master', {}),
    }
    return {
        'transport': 'dj_cqrs.transport.KombuTransport',
        'url': url,
        'queue': f'kombu_test_{suffix}',
        'exchange': f'cqrs_kombu_test_{suffix}',
        'master': master,
        'replica': replica,
        **overrides,
    }


@dataclass
class Broker:
    """The broker a test runs against, with helpers to look into its queues."""

    name: str
    url: str
    settings: dict[str, Any]
    events: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return self.settings['queue']

    @property
    def dead_letter_queue(self) -> str:
        return f'dead_letter_{self.queue}'

    def declare(self) -> None:
        """Declare the service and dead-letter queues (as a worker would on start)."""
        with kombu_transport.connect() as connection:
            channel = connection.default_channel
            kombu_transport.service_queue(connection)(channel).declare()
            kombu_transport.dead_letter_queue(connection)(channel).declare()

    def depth(self, queue: str) -> int:
        """How many messages wait in ``queue`` (none taken)."""
        with kombu_transport.connect() as connection:
            bound = kombu.Queue(queue, no_declare=True)(connection.default_channel)
            return int(bound.queue_declare(passive=True).message_count)

    def get_all(self, queue: str) -> list[Any]:
        """Take (and ack) every message waiting in ``queue``."""
        messages = []
        with kombu_transport.connect() as connection:
            bound = kombu.Queue(queue, no_declare=True)(connection.default_channel)
            while (message := bound.get(no_ack=True)) is not None:
                messages.append(message)
        return messages

    def publish_raw(self, body: bytes, routing_key: str, content_type: str) -> None:
        with kombu_transport.connect() as connection:
            producer = kombu.Producer(connection.default_channel)
            producer.publish(
                body,
                exchange=self.settings['exchange'],
                routing_key=routing_key,
                content_type=content_type,
                content_encoding='binary',
            )

    def run_worker(
        self,
        until: Callable[[], bool],
        timeout: float = 15.0,
        worker: KombuWorker | None = None,
        cqrs_ids: Any = None,
    ) -> float:
        """Run a worker in this thread until ``until()`` holds after a message (or timeout).

        Returns the seconds it ran. The worker stops within about a second of being asked.
        """
        worker = worker or KombuWorker(cqrs_ids=cqrs_ids)
        worker.IDLE_TICK = 0.2  # stop sooner once ``until()`` holds
        timer = threading.Timer(timeout, worker.stop)

        def check(sender: Any, signal: Any, **kwargs: Any) -> None:
            self.events.append((_name(signal), kwargs.get('payload')))
            if until():
                worker.stop()

        for signal in LIFECYCLE:
            signal.connect(check, weak=False, dispatch_uid=f'kombu-test-{id(signal)}')
        started = time.monotonic()
        timer.start()
        try:
            worker.run()
        finally:
            timer.cancel()
            for signal in LIFECYCLE:
                signal.disconnect(dispatch_uid=f'kombu-test-{id(signal)}')
        return time.monotonic() - started

    def event_names(self) -> list[str]:
        return [name for name, _ in self.events]

    def cleanup(self) -> None:
        KombuTransport.clean_connection()
        with kombu_transport.connect() as connection:
            channel = connection.default_channel
            for name in (self.queue, self.dead_letter_queue):
                kombu.Queue(name, no_declare=True)(channel).delete()
            kombu_transport.exchange()(channel).delete()


def body_of(message: Any) -> bytes:
    """A message's body bytes (py-amqp hands out ``str`` for UTF-8 bodies)."""
    body = message.body
    return body.encode('utf-8') if isinstance(body, str) else body


def _name(signal: Any) -> str:
    for name in dir(signals):
        if getattr(signals, name) is signal:
            return name.removeprefix('message_')
    return '?'


def make_broker(name: str, **overrides: Any) -> Iterator[Broker]:
    if name in SERVICES:
        require(SERVICES[name])
    url = overrides.pop('url', URLS[name])
    settings = kombu_settings(url, uuid.uuid4().hex[:10], **overrides)
    with override_settings(CQRS=settings):
        broker = Broker(name, url, settings)
        try:
            yield broker
        finally:
            broker.cleanup()


@pytest.fixture(params=['memory', 'amqp', 'redis'])
def broker(request: Any) -> Iterator[Broker]:
    """KombuTransport configured for one broker (``memory://``, RabbitMQ, Redis)."""
    yield from make_broker(request.param)


@pytest.fixture(params=['amqp', 'redis'])
def real_broker(request: Any) -> Iterator[Broker]:
    """KombuTransport over a real broker (RabbitMQ, Redis)."""
    yield from make_broker(request.param)
