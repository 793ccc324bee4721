"""Scale-out on the three-node RabbitMQ cluster with ``KombuTransport`` (issue #15).

Kombu takes several ``;``-separated URLs and fails over between them (``Connection.alt``);
``queue_type: 'quorum'`` declares quorum queues over AMQP. The master and the workers start
on the same node, which is then stopped while the master publishes: both move to another
node, nothing is lost. See ``test_cluster_rabbitmq.py`` for the harness.
"""

from __future__ import annotations

import time

import pytest

from integration_tests.cluster import RabbitCluster
from integration_tests.cluster_services import RATE, N, assert_nothing_lost, finish
from integration_tests.harness import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_kombu_quorum_node_stopped_mid_stream(cluster: RabbitCluster, cluster_services) -> None:
    services = cluster_services(
        replicas=1,
        queue_type='quorum',
        transport='dj_cqrs.transport.KombuTransport',
        orders=((0, 1, 2), (0, 1, 2)),
        url_query='',
    )
    replica = services.replicas[0]
    queue = services.queue(replica)
    consumer = services.consume(replica, workers=2)
    info = cluster.queue_info(queue)
    assert info['type'] == 'quorum', info
    victim = cluster.nodes[0]
    assert services.worker_nodes(consumer) == [victim]

    driver = services.drive(N, RATE)
    driver.wait_progress(N // 4)
    assert cluster.connected_nodes(services.master_pids()) == [victim]
    stopped_at = time.monotonic()
    cluster.stop_node(victim)
    services.wait_consumers(replica, 2, timeout=90)
    failover = time.monotonic() - stopped_at
    moved = wait_until(lambda: services.worker_nodes(consumer), 30, 0.2)
    assert victim not in moved, moved
    master_moved = wait_until(lambda: cluster.connected_nodes(services.master_pids()), 30, 0.2)
    assert victim not in master_moved, master_moved
    driver.wait_progress(N * 3 // 4, timeout=120)
    cluster.boot(victim)

    figures = finish(services, driver, 'kombu, quorum: master\'s and workers\' node stopped', {
        'stopped_node': victim.name, 'failover_s': round(failover, 1),
        'workers_moved_to': sorted({n.name for n in moved}),
        'master_moved_to': sorted({n.name for n in master_moved}),
    })  # fmt: skip
    assert_nothing_lost(services, figures, N)
