"""Fixtures shared by the unit suite."""

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from dj_cqrs.transport import InProcessTransport


@pytest.fixture(autouse=True)
def _clean_transport():
    from dj_cqrs.outbox.sending import hold

    InProcessTransport.reset()
    InProcessTransport.apply = True
    hold.clear()  # a failed publish in one test must not hold the next test's messages
    yield
    InProcessTransport.reset()
    InProcessTransport.apply = True
    hold.clear()


@pytest.fixture
def batch_size(settings):
    """``batch_size(n)`` sets ``CQRS['replica']['CQRS_BATCH_SIZE']`` for this test."""

    def set_size(size):
        cqrs = dict(settings.CQRS)
        cqrs['replica'] = {**cqrs.get('replica', {}), 'CQRS_BATCH_SIZE': size}
        settings.CQRS = cqrs

    return set_size


@pytest.fixture
def published():
    """Decoded bodies published so far, with their routing keys."""
    import json

    def read():
        return [(d.routing_key, json.loads(d.body)) for d in InProcessTransport.published]

    return read


@pytest.fixture
def cqrs_log(caplog):
    """Log lines of the django-cqrs logger as 'LEVEL message' strings."""
    caplog.set_level(logging.DEBUG, logger='django-cqrs')

    def lines():
        return [
            f'{r.levelname} {r.getMessage()}' for r in caplog.records if r.name == 'django-cqrs'
        ]

    return lines


def pytest_sessionfinish(session, exitstatus):
    """The test databases are gone by now: replica state still pending from the last tests
    must not be written at interpreter exit (it would log a database error)."""
    from dj_cqrs.observability import lag

    lag.tracker.stop()
    lag.tracker.discard()


@pytest.fixture(scope='session')
def node() -> Iterator[Any]:
    """The private RabbitMQ node of the tests that fault the whole broker (one per session:
    it holds a lock, so a second definition in another module would wait for the first)."""
    from tests import rabbit_node

    reason = rabbit_node.available()
    if reason is not None:
        if os.environ.get('CI'):
            pytest.fail(f'a private RabbitMQ node is needed: {reason} (CI is set)')
        pytest.skip(f'a private RabbitMQ node is needed: {reason}')
    with rabbit_node.private_node() as started:
        yield started
