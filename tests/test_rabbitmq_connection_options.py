"""Every connection option of RabbitMQTransport is honoured or refused clearly at start-up."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess

import pytest

from dj_cqrs.checks import check_settings
from dj_cqrs.conf import get_settings
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport.amqp import connection_parameters, parameters_from_url


def _rabbit(settings, **cqrs):
    settings.CQRS = {'transport': 'dj_cqrs.transport.RabbitMQTransport', 'queue': 'q', **cqrs}
    return get_settings()


def test_url_options_reach_pika():
    params = parameters_from_url(
        'amqp://h/?blocked_connection_timeout=7.5&connection_attempts=4&retry_delay=0.25'
        '&heartbeat=15&socket_timeout=3&stack_timeout=9&frame_max=65536&channel_max=10'
        "&tcp_options={'TCP_KEEPIDLE':60,'TCP_KEEPCNT':3}"
    )
    assert (
        params.blocked_connection_timeout,
        params.connection_attempts,
        params.retry_delay,
        params.heartbeat,
        params.socket_timeout,
        params.stack_timeout,
        params.frame_max,
        params.channel_max,
        params.tcp_options,
    ) == (7.5, 4, 0.25, 15, 3.0, 9.0, 65536, 10, {'TCP_KEEPIDLE': 60, 'TCP_KEEPCNT': 3})


def test_transport_options_apply_to_every_url_and_the_url_wins(settings):
    config = _rabbit(
        settings,
        url='amqp://a/?heartbeat=5;amqp://b/',
        transport_options={'heartbeat': 30, 'blocked_connection_timeout': 20},
    )
    first, second = connection_parameters(config)
    assert (first.heartbeat, second.heartbeat) == (5, 30)
    assert first.blocked_connection_timeout == second.blocked_connection_timeout == 20


@pytest.mark.parametrize(
    ('url', 'options', 'message'),
    [
        ('amqp://h/?tcp_options=nonsense', {}, 'tcp_options must be a dict'),
        ("amqp://h/?tcp_options={'TCP_NOPE':1}", {}, 'tcp_options must be a dict'),
        ('amqp://h/', {'heartbeat': [1]}, r"options'\]: option heartbeat=\[1\] has the wrong"),
        ('amqp://h/', {'frobnicate': 1}, "option 'frobnicate' is not supported"),
        ('amqps://h/?ca_certs=/etc/ca.pem', {}, r"'ca_certs' is not supported \(TLS files go in"),
    ],
)
def test_bad_options_are_refused_with_what_and_where(settings, url, options, message):
    config = _rabbit(settings, url=url, transport_options=options)
    with pytest.raises(ConfigurationError, match=message):
        connection_parameters(config)
    # ... and by the system check, before anything runs.
    errors = [e for e in check_settings() if e.id == 'dj_cqrs.E030']
    assert len(errors) == 1 and re.search(message, errors[0].msg)


@pytest.mark.skipif(shutil.which('openssl') is None, reason='openssl makes the test certificates')
def test_tls_files_build_a_verifying_context(settings, tmp_path):
    cert, key = str(tmp_path / 'c.pem'), str(tmp_path / 'k.pem')
    subprocess.run(
        ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
         '-subj', '/CN=localhost', '-keyout', key, '-out', cert],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    config = _rabbit(
        settings, url='amqps://h/', tls={'ca_certs': cert, 'certfile': cert, 'keyfile': key}
    )
    [params] = connection_parameters(config)
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert params.ssl_options.server_hostname == 'h'
    assert [c['subject'] for c in context.get_ca_certs()] == [((('commonName', 'localhost'),),)]


def test_unreadable_tls_file_is_refused_at_start_up(settings, tmp_path):
    """A CA file that does not exist stops the start (system check), not the first publish."""
    missing = str(tmp_path / 'missing-ca.pem')
    config = _rabbit(settings, url='amqps://h/', tls={'ca_certs': missing})
    with pytest.raises(ConfigurationError, match='missing-ca.pem'):
        connection_parameters(config)
    errors = [e for e in check_settings() if e.id == 'dj_cqrs.E030']
    assert len(errors) == 1 and 'missing-ca.pem' in errors[0].msg


def test_connection_attempts_and_retry_delay_are_honoured(settings, caplog):
    """`?connection_attempts=3&retry_delay=0.4`: the background publisher tries the broker
    three times, 0.4 s apart, before it reports the broker unreachable."""
    import logging
    import socket
    import time

    from dj_cqrs.transport import async_publisher
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
    from tests.rabbit_capture import payload

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    async_publisher._publisher.shutdown(2)
    _rabbit(
        settings,
        url=f'amqp://guest:guest@127.0.0.1:{port}/%2F?connection_attempts=3&retry_delay=0.4',
        master={'CQRS_PUBLISH_RETRIES': 0, 'CQRS_OUTBOX_MODE': 'off'},
    )
    caplog.set_level(logging.DEBUG)
    try:
        began = time.monotonic()
        RabbitMQTransport.produce(payload(1))
        while 'cannot connect' not in caplog.text and time.monotonic() - began < 10:
            time.sleep(0.02)
        elapsed = time.monotonic() - began
        assert async_publisher.flush(10)
    finally:
        async_publisher._publisher.shutdown(2)
    assert 'cannot connect' in caplog.text
    refused = [r for r in caplog.records if 'TCP Connection attempt failed' in r.getMessage()]
    assert len(refused) == 3
    assert elapsed >= 0.8  # two pauses of retry_delay between the three attempts
