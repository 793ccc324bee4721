"""Fixtures of the integration tests (see README.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from integration_tests.cluster import AMQP_PORTS, DIST_PORTS, RabbitCluster, scripts_dir
from integration_tests.cluster_services import ClusterServices, record
from integration_tests.harness import TRANSPORTS, Stack, wait_until
from tests.services import reachable, require, unavailable

_stacks: dict[str, Stack] = {}


@pytest.fixture(scope='session')
def _stack_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Stack]]:
    """One Stack per transport used; at the end its DB is dropped and its queues deleted."""
    base = tmp_path_factory.mktemp('cqrs_it')
    registry: dict[str, Stack] = {'__base__': base}  # type: ignore[dict-item]
    yield registry
    for name, stack in registry.items():
        if name != '__base__':
            stack.teardown()


@pytest.fixture
def transport_name() -> str:
    """The transport under test ; parametrize ``transport_name`` to change it."""
    return 'rabbitmq'


@pytest.fixture
def replica_db() -> str:
    """The replica's database: ``'postgres'`` by default; parametrize it with ``'mariadb'``."""
    return 'postgres'


@pytest.fixture
def stack(transport_name: str, replica_db: str, _stack_registry: dict) -> Iterator[Stack]:
    """Master + replica services on ``transport_name``; tables and queues emptied after the test."""
    spec = TRANSPORTS[transport_name]()
    for service in (*spec.services, replica_db):
        require(service)
    key = transport_name if replica_db == 'postgres' else f'{transport_name}_{replica_db}'
    current = _stack_registry.get(key)
    if current is None:
        workdir = _stack_registry['__base__'] / key
        workdir.mkdir()
        current = Stack(spec, workdir, replica_db)
        _stack_registry[key] = current
        current.setup()
    yield current
    current.reset()


@pytest.fixture
def master(stack: Stack):
    """The master service (``.manage(...)``, ``.shell(code)``, ``.query(sql)``)."""
    return stack.master


@pytest.fixture
def replica(stack: Stack):
    """The replica service (``.manage(...)``, ``.shell(code)``, ``.query(sql)``)."""
    return stack.replica


@pytest.fixture
def consumer(stack: Stack):
    """Factory ``consumer(workers=1, args=(), env=None)``: a ``cqrs_consume`` stopped after."""
    return stack.consumer


@pytest.fixture(name='wait_until')
def wait_until_fixture():
    """The bounded polling helper ``wait_until(predicate, timeout=20)``."""
    return wait_until


# The three-node RabbitMQ cluster (test_cluster_*.py) ----------------------------------------


@pytest.fixture(scope='session')
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three extra RabbitMQ nodes, clustered, for the whole session; removed at the end."""
    scripts = scripts_dir()
    if scripts is None:
        unavailable('rabbitmq-server is not installed: the cluster tests start their own nodes')
    require('postgres')
    busy = [port for port in (*AMQP_PORTS, *DIST_PORTS) if reachable('127.0.0.1', port)]
    if busy:
        pytest.fail(f'ports of the test cluster are already in use: {busy}')
    cluster = RabbitCluster(tmp_path_factory.mktemp('rabbit_cluster'), scripts)
    try:
        cluster.start()
        record('cluster start-up', {'nodes': len(cluster.nodes),
                                    'startup_s': round(cluster.startup_seconds, 1)})  # fmt: skip
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def cluster(rabbit_cluster: RabbitCluster) -> Iterator[RabbitCluster]:
    """The session's cluster; every node is running again after the test, whatever it did."""
    yield rabbit_cluster
    for node in rabbit_cluster.nodes:
        if not rabbit_cluster.alive(node):
            rabbit_cluster.boot(node)
        elif not rabbit_cluster.accepting(node):
            rabbit_cluster.resume_node(node)


@pytest.fixture
def cluster_services(
    cluster: RabbitCluster, tmp_path: Path
) -> Iterator[Callable[..., ClusterServices]]:
    """Factory of :class:`ClusterServices` (arguments as its own); torn down after the test."""
    made: list[ClusterServices] = []

    def make(**kwargs: Any) -> ClusterServices:
        services = ClusterServices(cluster, tmp_path / f'services_{len(made)}', **kwargs)
        made.append(services)
        services.setup()
        return services

    yield make
    for services in made:
        services.teardown()
