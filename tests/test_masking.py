"""Broker passwords never show: one masker for log lines, errors, ``cqrs_status``, the
outbox's ``last_error`` and ``repr()`` of the parsed settings (issue 12 B7).

Each hostile password is ``zq1<c>xk2``: neither half may appear anywhere, so a masker that
stops at the special character ``<c>`` is caught leaking the second half.
"""

from __future__ import annotations

import socket
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.test import override_settings

from dj_cqrs import broker_urls, conf
from dj_cqrs.exceptions import ConfigurationError, PublishError
from dj_cqrs.transport import amqp
from dj_cqrs.transport import kombu as kombu_transport

SPECIALS = ['@', '/', ';', ':', '?', '#', '@/;:', '\uff20']  # the last: a fullwidth '@'
PASSWORDS = [f'zq1{c}xk2' for c in SPECIALS]


def leaked(text: str) -> bool:
    return 'zq1' in text or 'xk2' in text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_one_masker_for_every_transport():
    """The pika and Kombu modules use the package's one masker, not copies of their own."""
    assert amqp.mask_url is broker_urls.mask_url
    assert kombu_transport.mask_url is broker_urls.mask_url


@pytest.mark.parametrize('password', PASSWORDS)
@pytest.mark.parametrize(
    'template, expected',
    [
        ('amqp://app:{pw}@rabbit:5672/prod', 'amqp://app:****@rabbit:5672/prod'),
        (
            'amqps://app:{pw}@r1/v;amqps://app:{pw}@r2/v',
            'amqps://app:****@r1/v;amqps://app:****@r2/v',
        ),
        (
            'Cannot connect to redis://:{pw}@127.0.0.1:1/0: Error 111 refused.',
            'Cannot connect to redis://:****@127.0.0.1:1/0: Error 111 refused.',
        ),
        ("['amqp://a:{pw}@h1', 'amqp://b:{pw}@h2']", "['amqp://a:****@h1', 'amqp://b:****@h2']"),
    ],
)
def test_hostile_passwords_are_masked_in_any_text(password, template, expected):
    """User and host stay readable; no part of the password is left."""
    assert broker_urls.mask_url(template.format(pw=password)) == expected


def test_text_without_password_is_unchanged():
    """URLs without a password (or without credentials), and plain text, are left alone."""
    for text in ['amqp://localhost', 'amqp://user@h/', 'filesystem://', 'no URL at all: a@b']:
        assert broker_urls.mask_url(text) == text


@pytest.mark.parametrize('password', PASSWORDS)
def test_repr_of_parsed_settings_shows_no_password(password):
    """Django's debug page and Sentry print the parsed settings: no URL or password in clear."""
    parsed = conf.parse(
        {
            'transport': 'dj_cqrs.transport.KombuTransport',
            'url': f'amqp://app:{password}@rabbit/',
            'password': password,
            'transport_options': {'sentinel_kwargs': {'password': password}},
        }
    )
    text = repr(parsed)
    assert not leaked(text)
    assert "url='amqp://app:****@rabbit/'" in text
    assert "password='****'" in text
    assert parsed.url == f'amqp://app:{password}@rabbit/'  # only the repr is masked


@pytest.mark.parametrize('password', PASSWORDS)
def test_configuration_errors_mask_the_url(password):
    """A URL the RabbitMQ transport refuses is quoted masked in the error."""
    for url in (f'amqpx://app:{password}@rabbit/', f'amqp://app:{password}@rabbit/?x=1'):
        with pytest.raises(ConfigurationError) as info:
            amqp.parameters_from_url(url.replace('?x=1', '?heartbeat=x'))
        assert '://app:****@rabbit/' in str(info.value)
        assert not leaked(str(info.value))


@pytest.mark.parametrize('password', PASSWORDS)
@pytest.mark.django_db(transaction=True)
def test_kombu_publish_error_and_log_lines_hide_the_password(password, cqrs_log):
    """An unreachable broker: PublishError and every log line name it with the password masked."""
    from tests.kombu_fixtures import kombu_settings
    from tests.test_kombu_connections import parent

    url = f'amqp://guest:{password}@127.0.0.1:{free_port()}/'
    with override_settings(CQRS=kombu_settings(url, 'masked')):
        with pytest.raises(PublishError) as info:
            kombu_transport.KombuTransport.produce(parent(1))
    assert '127.0.0.1' in str(info.value) and not leaked(str(info.value))
    assert not any(leaked(line) for line in cqrs_log())


@pytest.mark.parametrize('transport', ['RabbitMQTransport', 'KombuTransport'])
@pytest.mark.parametrize('password', PASSWORDS)
@pytest.mark.django_db
def test_cqrs_status_hides_the_password(transport, password):
    """``cqrs_status`` names the unreachable broker with its password masked."""
    url = f'amqp://guest:{password}@127.0.0.1:{free_port()}/'
    cqrs = {'transport': f'dj_cqrs.transport.{transport}', 'url': url, 'queue': 'replica'}
    out, err = StringIO(), StringIO()
    with override_settings(CQRS=cqrs), pytest.raises(SystemExit):
        call_command('cqrs_status', stdout=out, stderr=err)
    assert 'amqp://guest:****@127.0.0.1' in err.getvalue()
    assert not leaked(out.getvalue() + err.getvalue())


@pytest.mark.parametrize('password', PASSWORDS)
def test_hostile_password_reaches_both_clients_intact(password, settings):
    """A password holding ``@ / ; : ? #`` unescaped is not cut (into pieces that error
    messages would quote): pika and Kombu get it whole, with the right host and vhost."""
    url = f'amqp://app:{password}@rabbit:5673/prod;amqp://app:{password}@rabbit-2/prod'
    settings.CQRS = {'transport': 'dj_cqrs.transport.KombuTransport', 'url': url, 'queue': 'q'}
    first, second = amqp.connection_parameters(conf.get_settings())
    assert (first.host, first.port, first.virtual_host) == ('rabbit', 5673, 'prod')
    assert (first.credentials.password, second.credentials.password) == (password, password)
    assert second.host == 'rabbit-2'
    connection = kombu_transport.connect()
    assert (connection.hostname, connection.port, connection.password) == (
        'rabbit',
        5673,
        password,
    )
    assert [urlsplit(alt).hostname for alt in connection.alt] == ['rabbit', 'rabbit-2']


class LeakyTransport(kombu_transport.KombuTransport):
    """Fails with an error quoting its broker URL, as some client libraries do."""

    URL = 'redis://:zq1@xk2@127.0.0.1:1/0'

    @classmethod
    def produce(cls, payload):
        raise ConnectionError(f'Error 111 connecting to {cls.URL}. Connection refused.')


@pytest.mark.django_db(transaction=True)
def test_outbox_last_error_and_its_log_line_hide_the_password(cqrs_log):
    """The error kept with an unsent message (``last_error``, ``cqrs_status``, ``cqrs_outbox``)
    and the line saying it was kept are masked."""
    from dj_cqrs.models import OutboxMessage
    from tests.dj_master.models import GoldenParent

    cqrs = {
        'transport': f'{__name__}.LeakyTransport',
        'queue': 'replica',
        'master': {'CQRS_PUBLISH_CONFIRMS': 'sync', 'CQRS_OUTBOX_MODE': 'fallback'},
    }
    with override_settings(CQRS=cqrs):
        GoldenParent.objects.create(id=1, name='one')
    (error,) = OutboxMessage.objects.values_list('last_error', flat=True)
    assert 'redis://:****@127.0.0.1:1/0' in error
    assert not leaked(error)
    assert any('kept in the outbox' in line for line in cqrs_log())
    assert not any(leaked(line) for line in cqrs_log())


@pytest.mark.django_db
def test_cqrs_outbox_and_status_mask_an_old_unmasked_last_error():
    """A row written before this masker (password in clear) is shown masked."""
    from dj_cqrs.models import OutboxMessage
    from dj_cqrs.outbox import relaying

    OutboxMessage.objects.create(
        cqrs_id='golden_parent',
        instance_pk='1',
        routing_key='golden_parent',
        signal_type='SAVE',
        body='{}',
        last_error='ConnectionError: amqp://app:zq1@xk2@rabbit/ refused',
    )
    assert relaying.status()['last_error'] == 'ConnectionError: amqp://app:****@rabbit/ refused'
