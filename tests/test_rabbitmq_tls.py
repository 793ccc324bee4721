"""``amqps://`` end to end: both publishing modes through a TLS listener in front of RabbitMQ.

The broker here has no TLS port, so the test puts one in front of it: a TLS-terminating
relay on a free loopback port with a self-signed certificate for ``localhost``, trusted
through ``SSL_CERT_FILE`` (what ``ssl.create_default_context()`` reads). The client side is
exactly what a user gets from an ``amqps://`` URL: certificate and host name verified.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport import async_publisher
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.rabbit_capture import capture_queue, payload
from tests.services import require

BROKER = ('127.0.0.1', 5672)


class TlsRelay:
    """Accepts TLS connections on loopback and pipes their bytes to the broker (bounded)."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                continue
            self.accepted += 1
            threading.Thread(target=self._pipe, args=(raw,), daemon=True).start()

    def _pipe(self, raw: socket.socket) -> None:
        with contextlib.suppress(OSError), contextlib.closing(raw):
            raw.settimeout(5)
            client = self.context.wrap_socket(raw, server_side=True)
            client.setblocking(False)
            upstream = socket.create_connection(BROKER, timeout=5)
            for sock in (client, upstream):  # no Nagle delay on the relay's hops
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.setblocking(False)
            with contextlib.closing(client), contextlib.closing(upstream):
                while not self.stopping.is_set():
                    ready = client.pending() > 0
                    readable = (
                        [client] if ready else select.select([client, upstream], [], [], 0.2)[0]
                    )
                    for source, target in ((client, upstream), (upstream, client)):
                        if source not in readable:
                            continue
                        try:
                            data = source.recv(65536)
                        except (ssl.SSLWantReadError, BlockingIOError):
                            continue
                        if not data:
                            return
                        target.setblocking(True)
                        target.sendall(data)
                        target.setblocking(False)

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(2)


@pytest.fixture
def tls_broker(tmp_path, settings, monkeypatch):
    require('rabbitmq')
    if shutil.which('openssl') is None:
        pytest.skip('openssl is needed to make the test certificate')
    cert, key = str(tmp_path / 'cert.pem'), str(tmp_path / 'key.pem')
    subprocess.run(
        [
            'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
            '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost',
            '-keyout', key, '-out', cert,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    monkeypatch.setenv('SSL_CERT_FILE', cert)
    relay = TlsRelay(cert, key)
    async_publisher._publisher.shutdown(2)
    RabbitMQTransport.clean_connection()
    try:
        with capture_queue('cqrs_ut_tls', ['golden_parent']) as drain:
            settings.CQRS = {
                'transport': 'dj_cqrs.transport.RabbitMQTransport',
                'url': f'amqps://guest:guest@localhost:{relay.port}/%2F',
                'exchange': drain.exchange,
                'queue': 'svc',
            }

            def received():
                return [TransportPayload.decode(body).pk for _, _, body in drain()]

            received.relay = relay
            yield received
            async_publisher._publisher.shutdown(2)
            RabbitMQTransport.clean_connection()
    finally:
        relay.close()


@pytest.mark.parametrize('confirms', ['async', 'sync'])
def test_amqps_url_publishes_over_verified_tls(tls_broker, settings, confirms):
    settings.CQRS = {**settings.CQRS, 'master': {'CQRS_PUBLISH_CONFIRMS': confirms}}
    for pk in range(1, 301):  # enough for several frames and TLS records in flight
        assert RabbitMQTransport.produce(payload(pk)) is True
    assert async_publisher.flush(15)
    assert tls_broker() == list(range(1, 301))
    assert tls_broker.relay.accepted >= 1  # it did go through the TLS listener


def test_amqps_certificate_for_another_host_is_refused(tls_broker, settings, caplog):
    """127.0.0.1 is not in the certificate: the publisher refuses the connection and keeps
    the message (outbox off here: reported lost, with the reason)."""
    port = tls_broker.relay.port
    settings.CQRS = {
        **settings.CQRS,
        'url': f'amqps://guest:guest@127.0.0.1:{port}/%2F',
        'master': {'CQRS_PUBLISH_RETRIES': 0, 'CQRS_OUTBOX_MODE': 'off'},
    }
    RabbitMQTransport.produce(payload(1))
    assert async_publisher.flush(15)
    assert tls_broker() == []
    assert 'CERTIFICATE_VERIFY_FAILED' in caplog.text
