"""A private RabbitMQ node for the tests that fault the whole broker.

Memory alarms, ``close_all_connections``, restarts, users without permissions, a TLS listener
that wants client certificates and a small ``max_message_size`` must never touch the shared
broker on 5672 (other test runs use it at the same time). :func:`private_node` starts one
node per test session, ``cqrs-fault@localhost`` on 127.0.0.1:5682 (TLS on 5683), with its own
data, logs, config and no plugins, and removes it at the end. A file lock serialises test
runs that want it at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika

NODE = 'cqrs-fault@localhost'
PORT = 5682
TLS_PORT = 5683
DIST_PORT = 25682
MAX_MESSAGE_SIZE = 1_048_576
LOCK = Path('/tmp/cqrs-fault-node.lock')
BASE = Path('/tmp/cqrs-fault-node')
"""The node's files; the server runs as the ``rabbitmq`` user, which must reach them."""


@dataclass
class Certificates:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


@dataclass
class PrivateNode:
    base: Path
    certs: Certificates

    @property
    def url(self) -> str:
        return f'amqp://guest:guest@127.0.0.1:{PORT}/%2F'

    def ctl(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        return subprocess.run(
            ['rabbitmqctl', '-n', NODE, '-q', *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=_env(self.base),
        ).stdout

    def channel(self) -> contextlib.AbstractContextManager:
        return _channel(self.url)

    def up(self) -> bool:
        try:
            with _channel(self.url):
                return True
        except Exception:
            return False

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.up():
            if time.monotonic() > deadline:
                raise RuntimeError(f'{NODE} did not come up within {timeout} s')
            time.sleep(0.2)

    def unblock(self) -> None:
        """Undo a memory alarm a test raised (the node's normal watermark)."""
        self.ctl('set_vm_memory_high_watermark', '0.4')


@contextlib.contextmanager
def _channel(url: str) -> Iterator[object]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RABBITMQ_NODENAME=NODE,
        RABBITMQ_NODE_IP_ADDRESS='127.0.0.1',
        RABBITMQ_NODE_PORT=str(PORT),
        RABBITMQ_DIST_PORT=str(DIST_PORT),
        RABBITMQ_MNESIA_BASE=str(base / 'mnesia'),
        RABBITMQ_LOG_BASE=str(base / 'log'),
        RABBITMQ_CONFIG_FILE=str(base / 'rabbitmq.conf'),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(base / 'advanced.config'),
        RABBITMQ_CONF_ENV_FILE=str(base / 'rabbitmq-env.conf'),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(base / 'enabled_plugins'),
        RABBITMQ_PID_FILE=str(base / 'node.pid'),
        RABBITMQ_FEATURE_FLAGS_FILE=str(base / 'mnesia' / 'feature_flags'),
        ERL_CRASH_DUMP=str(base / 'erl_crash.dump'),
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='+S 1:1 +A 4',
    )
    return env


def _certificates(base: Path) -> Certificates:
    def openssl(*args: str) -> None:
        subprocess.run(['openssl', *args], check=True, capture_output=True, timeout=60, cwd=base)

    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
            '-subj', '/CN=cqrs test CA', '-keyout', 'ca.key', '-out', 'ca.pem')  # fmt: skip
    for name, cn, ext in (
        ('server', 'localhost', 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth'),
        ('client', 'cqrs-client', 'extendedKeyUsage=clientAuth'),
    ):
        (base / f'{name}.ext').write_text(ext + '\n')
        openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', f'/CN={cn}',
                '-keyout', f'{name}.key', '-out', f'{name}.csr')  # fmt: skip
        openssl('x509', '-req', '-in', f'{name}.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
                '-CAcreateserial', '-days', '2', '-extfile', f'{name}.ext',
                '-out', f'{name}.pem')  # fmt: skip
    return Certificates(
        ca=str(base / 'ca.pem'),
        server_cert=str(base / 'server.pem'),
        server_key=str(base / 'server.key'),
        client_cert=str(base / 'client.pem'),
        client_key=str(base / 'client.key'),
    )


def _stop_leftover(base: Path) -> None:
    """A node left by a crashed run: stop it."""
    if base.exists():
        subprocess.run(
            ['rabbitmqctl', '-n', NODE, '-q', 'stop'],
            capture_output=True,
            timeout=60,
            env=_env(base),
        )


def _hand_over(base: Path) -> None:
    """Let the ``rabbitmq`` user (rabbitmq-server switches to it) own the node's files."""
    try:
        import pwd

        user = pwd.getpwnam('rabbitmq')
    except (ImportError, KeyError):
        return
    if os.getuid() != 0:
        return
    for root, _folders, files in os.walk(base):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
    # The tests read the client certificate and key as root: nothing else to open up.


def available() -> str | None:
    """Why a private node cannot be started here (None: it can)."""
    for tool in ('rabbitmq-server', 'rabbitmqctl', 'openssl'):
        if shutil.which(tool) is None:
            return f'{tool} is not installed'
    return None


@contextlib.contextmanager
def private_node() -> Iterator[PrivateNode]:
    """Start the node (waiting for another test run's to go), yield it, stop and remove it."""
    base = BASE
    lock = open(LOCK, 'w')  # noqa: SIM115 - held for the whole session
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        _stop_leftover(base)
        shutil.rmtree(base, ignore_errors=True)
        for folder in (base / 'mnesia', base / 'log'):
            folder.mkdir(parents=True, exist_ok=True)
        certs = _certificates(base)
        (base / 'enabled_plugins').write_text('[].\n')
        (base / 'rabbitmq-env.conf').write_text('')
        (base / 'rabbitmq.conf').write_text(
            '\n'.join(
                [
                    f'listeners.tcp.1 = 127.0.0.1:{PORT}',
                    f'listeners.ssl.1 = 127.0.0.1:{TLS_PORT}',
                    f'ssl_options.cacertfile = {certs.ca}',
                    f'ssl_options.certfile = {certs.server_cert}',
                    f'ssl_options.keyfile = {certs.server_key}',
                    'ssl_options.verify = verify_peer',
                    'ssl_options.fail_if_no_peer_cert = true',
                    f'max_message_size = {MAX_MESSAGE_SIZE}',
                    'vm_memory_high_watermark.relative = 0.4',
                    'disk_free_limit.absolute = 1MB',
                    'log.console = false',
                    'log.file.level = warning',
                    '',
                ]
            )
        )
        node = PrivateNode(base, certs)
        _hand_over(base)
        subprocess.run(
            ['rabbitmq-server', '-detached'],
            env=_env(base),
            check=True,
            capture_output=True,
            timeout=60,
        )
        try:
            node.wait_up(90)
            yield node
        finally:
            node.ctl('stop', check=False, timeout=60)
            shutil.rmtree(base, ignore_errors=True)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
