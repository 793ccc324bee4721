"""Scale-out on a real three-node RabbitMQ cluster (issue #15), with ``RabbitMQTransport``.

The cluster (``cluster.py``) is started once per session by the ``rabbit_cluster`` fixture.
Each scenario runs a master that saves rows at a steady rate (each save is one message,
every row a new one, so a lost message is a missing row) while a node is stopped, killed or
paused, then checks that every replica equals the master row by row (revision included) and
that the dead-letter queues are empty. The figures of each run are printed (``pytest -rP``)
and, with ``CQRS_CLUSTER_REPORT=<file>``, appended to that file as JSON lines.
"""

from __future__ import annotations

import time

import pytest

from integration_tests.cluster import RabbitCluster
from integration_tests.cluster_services import (
    RATE,
    ClusterServices,
    N,
    assert_nothing_lost,
    finish,
    record,
)
from integration_tests.harness import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _failover(
    cluster: RabbitCluster, services: ClusterServices, workers: int, old_leaders: dict
) -> float:
    """Seconds until every queue has all its consumers back and a leader that is not down."""
    started = time.monotonic()

    def recovered() -> bool:
        for replica in services.replicas:
            counts = cluster.queue_counts(services.queue(replica))
            if counts is None or counts[1] < workers:
                return False
        return True

    wait_until(recovered, 90, 0.2, 'every queue to have its consumers again')
    for queue, old in old_leaders.items():
        info = wait_until(lambda q=queue: cluster.queue_info(q) or None, 30, 0.5)
        if old is not None:
            assert info['leader'] != old or cluster.accepting(cluster.node_named(old)), info
    return time.monotonic() - started


def test_quorum_leader_node_stopped_mid_stream(cluster: RabbitCluster, cluster_services) -> None:
    """Scenario 1: two replicas x two workers on quorum queues; the leader's node is stopped
    while the master publishes to a URL list of all three nodes, then started again."""
    services = cluster_services(replicas=2, queue_type='quorum')
    for replica in services.replicas:
        services.consume(replica, workers=2)
    queues = [services.queue(r) for r in services.replicas]
    infos = {q: cluster.queue_info(q) for q in queues}
    assert all(info['type'] == 'quorum' for info in infos.values()), infos
    victim = cluster.node_named(infos[queues[0]]['home'])

    driver = services.drive(N, RATE)
    driver.wait_progress(N // 4)
    stopped_at = time.monotonic()
    cluster.stop_node(victim)
    stop_seconds = time.monotonic() - stopped_at
    failover = _failover(cluster, services, 2, {q: infos[q]['leader'] for q in queues})
    new_leader = cluster.queue_info(queues[0])['leader']
    assert new_leader != victim.node
    driver.wait_progress(N * 3 // 4, timeout=120)
    restart_at = time.monotonic()
    cluster.boot(victim)
    restart = time.monotonic() - restart_at

    figures = finish(services, driver, 'quorum: leader node stopped', {
        'stopped_node': victim.name, 'new_leader': new_leader,
        'node_stop_s': round(stop_seconds, 1),
        'failover_s': round(stop_seconds + failover, 1), 'node_restart_s': round(restart, 1),
    })  # fmt: skip
    assert_nothing_lost(services, figures, N)


def test_quorum_master_node_killed(cluster: RabbitCluster, cluster_services) -> None:
    """Scenario 2: the node the master publishes to is killed (kill -9 of its beam process):
    the publisher fails over to another URL; every message confirmed, none lost."""
    services = cluster_services(replicas=2, queue_type='quorum')
    for replica in services.replicas:
        services.consume(replica, workers=2)
    driver = services.drive(N, RATE)
    driver.wait_progress(N // 4)
    before = wait_until(lambda: cluster.connected_nodes(services.master_pids()), 10, 0.2)
    assert len(before) == 1, before
    victim = before[0]

    killed_at = time.monotonic()
    cluster.kill_node(victim)
    after = wait_until(
        lambda: [n for n in cluster.connected_nodes(services.master_pids()) if n is not victim],
        60, 0.1, 'the master to reconnect to another node',
    )  # fmt: skip
    reconnect = time.monotonic() - killed_at
    # The workers of the replicas lose their connection if they were on that node, too.
    _failover(cluster, services, 2, {})
    driver.wait_progress(N * 3 // 4, timeout=120)
    cluster.boot(victim)

    figures = finish(services, driver, 'quorum: master node killed (kill -9)', {
        'killed_node': victim.name, 'master_moved_to': after[0].name,
        'master_reconnect_s': round(reconnect, 1),
    })  # fmt: skip
    assert_nothing_lost(services, figures, N)


def test_quorum_node_paused_workers_reconnect(cluster: RabbitCluster, cluster_services) -> None:
    """Scenario 3: the node the workers are connected to is paused (stop_app) for longer than
    the heartbeat (5 s): they reconnect to the other nodes and keep consuming."""
    services = cluster_services(replicas=1, queue_type='quorum')
    replica = services.replicas[0]
    consumer = services.consume(replica, workers=2)
    nodes = wait_until(lambda: services.worker_nodes(consumer), 10, 0.2)
    assert len(nodes) == 1, nodes  # both workers on the first node of their URL list
    victim = nodes[0]
    driver = services.drive(N, RATE)
    driver.wait_progress(N // 4)

    paused_at = time.monotonic()
    cluster.pause_node(victim)
    failover = _failover(cluster, services, 2, {})
    elsewhere = services.worker_nodes(consumer)
    assert elsewhere and victim not in elsewhere, elsewhere
    applied_during_pause = len(services.replica_rows(replica))
    # Stay paused for longer than the heartbeat, still consuming elsewhere.
    wait_until(lambda: time.monotonic() - paused_at > 12, 20, 0.5)
    more = wait_until(
        lambda: len(services.replica_rows(replica)) > applied_during_pause, 30, 0.2,
        'the replica to apply messages while the node is paused',
    )  # fmt: skip
    assert more
    pause = time.monotonic() - paused_at
    cluster.resume_node(victim)

    figures = finish(services, driver, 'quorum: workers\' node paused (stop_app)', {
        'paused_node': victim.name, 'paused_s': round(pause, 1),
        'workers_moved_to': sorted({n.name for n in elsewhere}),
        'failover_s': round(failover, 1),
    })  # fmt: skip
    assert_nothing_lost(services, figures, N)


def test_classic_queue_node_loss_costs(cluster: RabbitCluster, cluster_services) -> None:
    """Scenario 4: classic queues (the default) on the cluster. A classic queue lives on one
    node: while that node is down its replica gets nothing, and what the master publishes
    meanwhile is measured here (it is what the docs quote)."""
    services = cluster_services(replicas=2, queue_type='classic')
    for replica in services.replicas:
        services.consume(replica, workers=2)
    queues = [services.queue(r) for r in services.replicas]
    infos = {q: cluster.queue_info(q) for q in queues}
    assert all(info['type'] == 'classic' for info in infos.values()), infos
    home = cluster.node_named(infos[queues[0]]['home'])

    driver = services.drive(N, RATE)
    driver.wait_progress(N // 4)
    down_from = driver.progress()
    stopped_at = time.monotonic()
    cluster.stop_node(home)
    driver.wait_progress(N * 3 // 4, timeout=120)
    cluster.boot(home)
    back_at = driver.progress()
    outage = time.monotonic() - stopped_at
    recovered = services.wait_consumers(services.replicas[0], 2, timeout=90)
    # The queue on the node that stayed up misses nothing; the other one is drained.
    wait_until(lambda: cluster.queue_counts(queues[0]) == (0, 2), 60, 0.5)

    figures = finish(services, driver, 'classic: home node of one queue stopped', {
        'stopped_node': home.name, 'outage_s': round(outage, 1),
        'consumers_back_after_restart_s': round(recovered, 1),
        'published_while_down': back_at - down_from,
    }, wait=False)  # fmt: skip
    # The broker confirmed every message (at once, or after a stay in the outbox): it had a
    # queue for it, the other replica's. Confirms do not protect the queue that is down.
    assert figures['confirmed'] + figures['kept_in_outbox_then_relayed'] == N
    assert figures['replica1']['lost'] == 0 and figures['replica1']['diverged'] == 0
    # What the node loss cost: every message published while the queue's node was down is
    # gone for that replica, silently; nothing published before or after.
    master = {row[0] for row in services.master_rows()}
    replica = {row[0] for row in services.replica_rows(services.replicas[0])}
    missing = sorted(master - replica)
    assert missing, figures
    assert down_from - 2 <= missing[0] and missing[-1] <= back_at + 2, (missing, figures)
    assert figures['replica0']['diverged'] == 0 and figures['replica0']['dead_letters'] == 0


HOT_ROWS = 5
HOT_UPDATES = 600


@pytest.mark.parametrize('backlog', [True, False], ids=['backlog', 'live'])
def test_hot_rows_four_workers_end_at_last_revision(
    cluster: RabbitCluster, cluster_services, backlog: bool
) -> None:
    """Per-row order under competing workers: 4 workers on one quorum queue, a few rows
    updated over and over. Messages of one row are taken by different workers and may be
    applied out of order; the revision check skips the stale ones, so every row ends at the
    master's last revision. ``backlog``: the queue is filled before the workers start (the
    most reordering); ``live``: the workers run while the master publishes."""
    services = cluster_services(replicas=1, queue_type='quorum')
    replica = services.replicas[0]
    if backlog:
        # Declare the queue (and its bindings) with a worker, then leave it to fill up.
        services.consume(replica, workers=1)
        services.consumers.pop().stop()
        result = services.drive(HOT_UPDATES, 300.0, rows=HOT_ROWS).result()
        services.consume(replica, workers=4)
    else:
        services.consume(replica, workers=4)
        result = services.drive(HOT_UPDATES, 150.0, rows=HOT_ROWS).result()
    assert result['published'] == HOT_UPDATES and result['errors'] == 0
    services.wait_equal(timeout=120)
    logs = services.log_counts(replica)
    figures = {
        'published': result['published'],
        'confirmed': result['confirmed'],
        'rows': HOT_ROWS,
        'workers': 4,
        'applied_lines': logs['applied'],
        'stale_skipped': logs['stale'],
        'duplicates_skipped': logs['duplicate'],
        'diverged': services.diverged(replica),
    }
    record(f'hot rows, 4 workers, one quorum queue ({"backlog" if backlog else "live"})', figures)
    master = services.master_rows()
    assert [row[2] for row in master] == [HOT_UPDATES // HOT_ROWS - 1] * HOT_ROWS
    assert services.replica_rows(replica) == master, figures
    assert services.dead_letters(replica) == 0
