"""Reachability of the external services some tests need.

A test that needs RabbitMQ, Redis, PostgreSQL or MariaDB calls ``require(...)``: on a developer
machine without the service it is skipped with the reason; with ``CI`` set it fails instead, so
CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket

import pytest

SERVICES = {
    'rabbitmq': ('127.0.0.1', 5672),
    'redis': ('127.0.0.1', 6379),
    'postgres': ('127.0.0.1', 5432),
    'mariadb': ('127.0.0.1', 3306),
}


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name: str) -> None:
    """Skip (or, under CI, fail) the calling test when service ``name`` is not reachable."""
    host, port = SERVICES[name]
    if reachable(host, port):
        return
    unavailable(f'{name} is not reachable at {host}:{port}')


def unavailable(reason: str) -> None:
    """Skip the calling test with ``reason`` or, with ``CI`` set, fail it."""
    if os.environ.get('CI'):
        pytest.fail(f'{reason} (CI is set: service tests must run)')
    pytest.skip(reason)
