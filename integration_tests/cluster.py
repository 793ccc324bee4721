"""A three-node RabbitMQ cluster on loopback for the cluster tests (``test_cluster_*.py``).

Three extra nodes of the installed ``rabbitmq-server`` run beside the machine's default node
(which is left alone): names ``cqrs-c1@localhost`` .. ``cqrs-c3@localhost``, AMQP ports
5701-5703, distribution ports 25701-25703, each with its own data, log and config folders in a
temporary directory, no plugins, one Erlang scheduler and a small memory limit. They share the
Erlang cookie of the user running the tests (``~/.erlang.cookie``; Erlang creates it if it is
missing). ``c2`` and ``c3`` join ``c1`` with ``rabbitmqctl join_cluster``.

:class:`RabbitCluster` starts the nodes, stops, kills (``kill -9`` of the beam process),
pauses (``stop_app``) and restarts them, says which node leads a quorum queue and which node
a process is connected to, and removes everything in :meth:`RabbitCluster.destroy`. Every
wait is bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

# accepting() probes nodes that are down on purpose: pika's connection errors are expected.
logging.getLogger('pika').setLevel(logging.CRITICAL)

NAMES = ('cqrs-c1', 'cqrs-c2', 'cqrs-c3')
AMQP_PORTS = (5701, 5702, 5703)
DIST_PORTS = (25701, 25702, 25703)
START_TIMEOUT = 90.0
"""Seconds a node may take to boot on a loaded 2-core machine."""

_CONFIG = """\
listeners.tcp.default = 127.0.0.1:{port}
vm_memory_high_watermark.absolute = 400MB
disk_free_limit.absolute = 50MB
log.file.level = info
log.console = false
"""


def scripts_dir() -> Path | None:
    """The folder of RabbitMQ's own scripts (``rabbitmq-server``, ``rabbitmqctl``), or None.

    Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq`` user
    and its fixed folders; the real scripts are in ``/usr/lib/rabbitmq/bin``. Elsewhere
    (Homebrew, the generic unix tarball) the scripts on ``PATH`` are the real ones.
    ``RABBITMQ_SCRIPTS_DIR`` names the folder instead (and only that one is looked at).
    """
    override = os.environ.get('RABBITMQ_SCRIPTS_DIR')
    if override:
        candidates = [Path(override)]
    else:
        candidates = [Path('/usr/lib/rabbitmq/bin')]
        found = shutil.which('rabbitmq-server')
        if found and not os.path.realpath(found).endswith('rabbitmq-script-wrapper'):
            candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / 'rabbitmq-server').exists() and (folder / 'rabbitmqctl').exists():
            return folder
    return None


@dataclass
class Node:
    """One node of the cluster."""

    name: str
    port: int
    dist_port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def node(self) -> str:
        return f'{self.name}@localhost'

    @property
    def url(self) -> str:
        return f'amqp://guest:guest@127.0.0.1:{self.port}/%2F'

    @property
    def pid_file(self) -> Path:
        return self.directory / 'pid'

    def env(self) -> dict[str, str]:
        d = self.directory
        return {
            **os.environ,
            'HOME': os.path.expanduser('~'),
            'RABBITMQ_NODENAME': self.node,
            'RABBITMQ_NODE_IP_ADDRESS': '127.0.0.1',
            'RABBITMQ_NODE_PORT': str(self.port),
            'RABBITMQ_DIST_PORT': str(self.dist_port),
            'RABBITMQ_MNESIA_BASE': str(d / 'mnesia'),
            'RABBITMQ_LOG_BASE': str(d / 'log'),
            'RABBITMQ_CONFIG_FILE': str(d / 'rabbitmq.conf'),
            'RABBITMQ_ADVANCED_CONFIG_FILE': str(d / 'advanced.config'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': str(d / 'enabled_plugins'),
            'RABBITMQ_PLUGINS_EXPAND_DIR': str(d / 'plugins'),
            'RABBITMQ_PID_FILE': str(self.pid_file),
            # One scheduler and few async threads: three nodes share two cores with the tests.
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS': '+S 1:1 +A 4',
        }

    def beam_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


class RabbitCluster:
    """Three RabbitMQ nodes on loopback, clustered (see the module docstring)."""

    def __init__(self, workdir: Path, scripts: Path) -> None:
        self.workdir = workdir
        self.scripts = scripts
        self.nodes = [
            Node(name, port, dist, workdir / name)
            for name, port, dist in zip(NAMES, AMQP_PORTS, DIST_PORTS, strict=True)
        ]
        self.startup_seconds = 0.0

    # Life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Boot the three nodes (in parallel), cluster them, check all three are running."""
        started = time.monotonic()
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            (node.directory / 'rabbitmq.conf').write_text(_CONFIG.format(port=node.port))
            (node.directory / 'enabled_plugins').write_text('[].\n')
            (node.directory / 'advanced.config').write_text('[].\n')
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self.boot, self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, 'stop_app')
            self.ctl(node, 'join_cluster', first.node)
            self.ctl(node, 'start_app')
        running = self.running_nodes(first)
        missing = {n.node for n in self.nodes} - running
        if missing:
            raise AssertionError(f'nodes not in the cluster after join_cluster: {missing}')
        self.startup_seconds = time.monotonic() - started

    def boot(self, node: Node) -> None:
        """Start ``node``'s server process and wait until its broker application runs."""
        node.pid_file.unlink(missing_ok=True)
        log = open(node.directory / 'server.out', 'ab')  # noqa: SIM115 (owned by the process)
        node.process = subprocess.Popen(
            [str(self.scripts / 'rabbitmq-server')],
            env=node.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            self.ctl(
                node, 'wait', '--timeout', str(int(START_TIMEOUT)), str(node.pid_file),
                timeout=START_TIMEOUT + 15,
            )  # fmt: skip
        except AssertionError as err:
            raise AssertionError(f'{err}\nserver output:\n{self.server_output(node)}') from None

    def server_output(self, node: Node) -> str:
        path = node.directory / 'server.out'
        return path.read_text(errors='replace')[-3000:] if path.exists() else ''

    def stop_node(self, node: Node, timeout: float = 60.0) -> None:
        """Stop a node cleanly (``rabbitmqctl shutdown``: waits until the process is gone)."""
        self.ctl(node, 'shutdown', timeout=timeout)
        if node.process is not None:
            node.process.wait(timeout)

    def kill_node(self, node: Node) -> None:
        """``kill -9`` of the node's beam process: no goodbye to clients or peers."""
        pid = node.beam_pid()
        if pid is None:
            raise AssertionError(f'{node.node} has no pid file')
        os.kill(pid, signal.SIGKILL)
        if node.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(15)

    def pause_node(self, node: Node) -> None:
        """``rabbitmqctl stop_app``: the Erlang node stays, the broker closes every connection."""
        self.ctl(node, 'stop_app')

    def resume_node(self, node: Node) -> None:
        self.ctl(node, 'start_app', timeout=START_TIMEOUT)

    def destroy(self) -> None:
        """Stop every node (bounded), kill what is left, remove the folders."""
        for node in self.nodes:
            if self.alive(node):
                with contextlib.suppress(Exception):
                    self.ctl(node, 'shutdown', timeout=30)
            pid = node.beam_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if node.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(node.process.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    node.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # Questions --------------------------------------------------------------------------------

    def ctl(self, node: Node, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n <node> <args>``; its stdout (fails the test on a non-zero exit)."""
        try:
            proc = subprocess.run(
                [str(self.scripts / 'rabbitmqctl'), '-q', '-n', node.node, *args],
                env=node.env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f'rabbitmqctl -n {node.node} {" ".join(args)}: timed out')
        if proc.returncode != 0:
            raise AssertionError(
                f'rabbitmqctl -n {node.node} {" ".join(args)} exited {proc.returncode}:\n'
                f'{proc.stdout}\n{proc.stderr}'
            )
        return proc.stdout

    def alive(self, node: Node) -> bool:
        pid = node.beam_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def accepting(self, node: Node) -> bool:
        """Whether the node answers AMQP (its broker application runs)."""
        try:
            connection = pika.BlockingConnection(_parameters(node.url))
        except Exception:
            return False
        with contextlib.suppress(Exception):
            connection.close()
        return True

    def running_nodes(self, via: Node) -> set[str]:
        out = self.ctl(via, 'eval', 'rabbit_nodes:all_running().')
        for char in "[],'":
            out = out.replace(char, ' ')
        return set(out.split())

    def up(self) -> list[Node]:
        return [node for node in self.nodes if self.accepting(node)]

    def queue_info(self, queue: str) -> dict[str, str]:
        """``type``, ``leader``, ``members`` and ``home`` (node of the leader, or of a classic
        queue) of a queue, asked of a live node; {} if the queue is not there."""
        for node in self.up():
            out = self.ctl(node, 'list_queues', '--no-table-headers', 'name', 'type', 'leader',
                           'members', 'pid')  # fmt: skip
            for line in out.splitlines():
                parts = line.split('\t')
                if parts and parts[0] == queue:
                    # A classic queue has no leader: its node is in its process id, <node.N.N.N>.
                    home = parts[2] or parts[4].strip('<>').split('.')[0]
                    return {'type': parts[1], 'leader': parts[2], 'members': parts[3],
                            'home': home}  # fmt: skip
            return {}
        raise AssertionError('no node of the cluster answers')

    def node_named(self, name: str) -> Node:
        for node in self.nodes:
            if node.node == name or node.name == name:
                return node
        raise KeyError(name)

    def urls(self, order: Sequence[int] = (0, 1, 2)) -> str:
        """The ``;``-separated URL list of the nodes, in ``order`` (indexes)."""
        return ';'.join(self.nodes[i].url for i in order)

    @contextlib.contextmanager
    def channel(self) -> Iterator[Any]:
        """A pika channel on the first node that answers."""
        connection = pika.BlockingConnection([_parameters(n.url) for n in self.nodes])
        try:
            yield connection.channel()
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def queue_counts(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of a queue; None if it does not exist (or is down)."""
        try:
            with self.channel() as ch:
                ok = ch.queue_declare(queue, passive=True)
                return ok.method.message_count, ok.method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return None

    def delete_queues(self, *queues: str) -> None:
        for queue in queues:
            with contextlib.suppress(Exception), self.channel() as ch:
                ch.queue_delete(queue)

    def connected_nodes(self, pids: Sequence[int]) -> list[Node]:
        """The nodes the processes ``pids`` have an established TCP connection to (Linux)."""
        ports = {node.port: node for node in self.nodes}
        remote = _remote_ports(pids)
        return [ports[port] for port in sorted(remote) if port in ports]


def _parameters(url: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 3
    params.blocked_connection_timeout = 10
    return params


def _remote_ports(pids: Sequence[int]) -> set[int]:
    """Remote ports of the established IPv4 TCP sockets of some processes (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f'/proc/{pid}/fd'):
                with contextlib.suppress(OSError):
                    target = os.readlink(f'/proc/{pid}/fd/{fd}')
                    if target.startswith('socket:['):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    with open('/proc/net/tcp') as table:
        next(table)
        for line in table:
            fields = line.split()
            state, inode = fields[3], fields[9]
            if state == '01' and inode in inodes:  # 01: ESTABLISHED
                ports.add(int(fields[2].split(':')[1], 16))
    return ports
