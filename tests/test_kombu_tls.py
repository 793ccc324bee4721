"""``amqps://`` with KombuTransport, and ``CQRS['tls']`` for both transports (issue 12 B8).

Reuses the TLS relay of ``test_rabbitmq_tls`` (a TLS listener in front of RabbitMQ with a
self-signed certificate for ``localhost``). The CA is given through ``CQRS['tls']['ca_certs']``
here, not through ``SSL_CERT_FILE``, so the option itself is what makes the certificate trusted.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import ConfigurationError, PublishError
from dj_cqrs.transport import async_publisher
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.rabbit_capture import capture_queue, payload
from tests.services import require
from tests.test_rabbitmq_tls import TlsRelay


def make_certificate(folder, name, cn='localhost'):
    """A self-signed certificate (its own CA) for host ``cn``: (cert path, key path)."""
    cert, key = str(folder / f'{name}.pem'), str(folder / f'{name}.key')
    subprocess.run(
        [
            'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
            '-subj', f'/CN={cn}', '-addext', f'subjectAltName=DNS:{cn}',
            '-keyout', key, '-out', cert,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


class ClientCertRelay(TlsRelay):
    """The relay, also requiring a client certificate signed by ``client_ca``."""

    def __init__(self, cert, key, client_ca):
        super().__init__(cert, key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(client_ca)


@pytest.fixture
def tls(tmp_path, monkeypatch):
    """Server and client certificates, a TLS relay, and a capture queue behind it."""
    require('rabbitmq')
    if shutil.which('openssl') is None:
        pytest.skip('openssl is needed to make the test certificates')
    monkeypatch.delenv('SSL_CERT_FILE', raising=False)
    cert, key = make_certificate(tmp_path, 'server')
    client_cert, client_key = make_certificate(tmp_path, 'client', cn='cqrs-client')
    relays = []

    def relay(client_ca=None):
        made = ClientCertRelay(cert, key, client_ca) if client_ca else TlsRelay(cert, key)
        relays.append(made)
        return made

    async_publisher._publisher.shutdown(2)
    RabbitMQTransport.clean_connection()
    KombuTransport.clean_connection()
    try:
        with capture_queue('cqrs_ut_kombu_tls', ['golden_parent']) as drain:
            drain.relay = relay
            drain.ca = cert
            drain.client = {'certfile': client_cert, 'keyfile': client_key}
            drain.pks = lambda: [TransportPayload.decode(b).pk for _, _, b in drain()]
            yield drain
    finally:
        async_publisher._publisher.shutdown(2)
        RabbitMQTransport.clean_connection()
        KombuTransport.clean_connection()
        for made in relays:
            made.close()


def cqrs(tls, transport, host, port, **tls_options):
    return {
        'transport': f'dj_cqrs.transport.{transport}',
        'url': f'amqps://guest:guest@{host}:{port}/%2F',
        'exchange': tls.exchange,
        'queue': 'svc',
        'tls': {'ca_certs': tls.ca, **tls_options},
        'master': {'CQRS_PUBLISH_RETRIES': 0, 'CQRS_PUBLISH_CONFIRMS': 'sync'},
    }


def test_kombu_amqps_publishes_over_verified_tls(tls, settings):
    """The certificate names ``localhost``: Kombu publishes through the TLS listener."""
    relay = tls.relay()
    settings.CQRS = cqrs(tls, 'KombuTransport', 'localhost', relay.port)
    for pk in (1, 2, 3):
        assert KombuTransport.produce(payload(pk)) is True
    assert tls.pks() == [1, 2, 3]
    assert relay.accepted >= 1


def test_kombu_amqps_refuses_a_certificate_for_another_host(tls, settings, monkeypatch):
    """Trusted CA, but the certificate is for ``localhost`` and we connect to ``127.0.0.1``:
    refused before anything is sent (so the password is never sent either)."""
    monkeypatch.setenv('SSL_CERT_FILE', tls.ca)  # trusted the system way too
    relay = tls.relay()
    settings.CQRS = cqrs(tls, 'KombuTransport', '127.0.0.1', relay.port)
    with pytest.raises(PublishError) as info:
        KombuTransport.produce(payload(1))
    cause = str(info.value.__cause__)
    assert 'CERTIFICATE_VERIFY_FAILED' in cause
    assert "certificate is not valid for '127.0.0.1'" in cause
    assert tls.pks() == []


def test_kombu_amqps_failover_checks_each_host_under_its_own_name(tls, settings):
    """The first URL is down; the next one (``localhost``) is verified as ``localhost``, not
    under the first URL's name."""
    relay = tls.relay()
    settings.CQRS = cqrs(tls, 'KombuTransport', 'localhost', relay.port)
    settings.CQRS['url'] = (
        'amqps://guest:guest@ip6-unknown-host.invalid:1/%2F;' + settings.CQRS['url']
    )
    assert KombuTransport.produce(payload(4)) is True
    assert tls.pks() == [4]


def test_kombu_amqps_failover_host_with_a_wrong_certificate_is_refused(tls, settings, monkeypatch):
    """After a failover switch the next host's name is checked too (``127.0.0.1`` is not in
    the ``localhost`` certificate)."""
    monkeypatch.setenv('SSL_CERT_FILE', tls.ca)
    relay = tls.relay()
    settings.CQRS = cqrs(tls, 'KombuTransport', '127.0.0.1', relay.port)
    settings.CQRS['url'] = (
        'amqps://guest:guest@ip6-unknown-host.invalid:1/%2F;' + settings.CQRS['url']
    )
    with pytest.raises(PublishError):
        KombuTransport.produce(payload(5))
    assert relay.accepted >= 1  # it reached the second host, whose certificate was refused
    assert tls.pks() == []


@pytest.mark.parametrize('transport', ['KombuTransport', 'RabbitMQTransport'])
def test_client_certificate_is_presented_when_configured(tls, settings, transport):
    """A broker requiring a client certificate accepts ``certfile``/``keyfile``; without
    them the connection is refused."""
    relay = tls.relay(client_ca=tls.client['certfile'])
    cls = KombuTransport if transport == 'KombuTransport' else RabbitMQTransport
    settings.CQRS = cqrs(tls, transport, 'localhost', relay.port)
    with pytest.raises(PublishError):
        cls.produce(payload(1))
    cls.clean_connection()
    settings.CQRS = cqrs(tls, transport, 'localhost', relay.port, **tls.client)
    assert cls.produce(payload(2)) is True
    assert tls.pks() == [2]


def test_rabbitmq_trusts_the_ca_given_in_settings(tls, settings):
    """``CQRS['tls']['ca_certs']`` replaces the system CA bundle for RabbitMQTransport too."""
    relay = tls.relay()
    settings.CQRS = cqrs(tls, 'RabbitMQTransport', 'localhost', relay.port)
    assert RabbitMQTransport.produce(payload(5)) is True
    assert tls.pks() == [5]


@pytest.mark.parametrize(
    'value, message',
    [
        ({'ca_certs': 5}, "CQRS['tls']['ca_certs'] must be a file path, got 5."),
        ({'cafile': 'x'}, "CQRS['tls'] has unknown keys ['cafile']"),
        ('ca.pem', "CQRS['tls'] must be a dict, got str."),
    ],
)
def test_bad_tls_options_are_configuration_errors(settings, value, message):
    """A bad ``CQRS['tls']`` is a system check error (dj_cqrs.E007) and a clear error."""
    from dj_cqrs import conf
    from dj_cqrs.checks import check_settings

    settings.CQRS = {**settings.CQRS, 'tls': value}
    assert [(m.id, message in m.msg) for m in check_settings()] == [('dj_cqrs.E007', True)]
    with pytest.raises(ConfigurationError, match='tls'):
        conf.get_settings()
