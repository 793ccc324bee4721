"""RabbitMQ connection settings and topology (no broker needed)."""

from __future__ import annotations

import pika
import pytest

from dj_cqrs.conf import parse
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport.amqp import (
    Topology,
    connection_parameters,
    describe,
    mask_url,
    parameters_from_url,
    split_urls,
    topology_for,
)


def test_vhost_comes_from_the_url_path_url_decoded():
    """`amqp://.../%2Fprod` connects to vhost '/prod' (the original ignored the vhost)."""
    params = parameters_from_url('amqp://u:p@broker:5673/%2Fprod')
    assert (params.host, params.port, params.virtual_host) == ('broker', 5673, '/prod')
    assert (params.credentials.username, params.credentials.password) == ('u', 'p')


@pytest.mark.parametrize('url', ['amqp://h', 'amqp://h/'])
def test_empty_path_is_the_default_vhost(url):
    """No path, or '/', means vhost '/'."""
    assert parameters_from_url(url).virtual_host == '/'


def test_url_decoded_credentials_and_defaults():
    """User and password are URL-decoded; missing ones fall back to guest/guest."""
    params = parameters_from_url('amqp://us%40er:p%3Ass@h')
    assert (params.credentials.username, params.credentials.password) == ('us@er', 'p:ss')
    default = parameters_from_url('amqp://h')
    assert (default.credentials.username, default.port) == ('guest', 5672)


def test_amqps_uses_tls_and_port_5671():
    """`amqps://` gets TLS options with a default SSL context and port 5671."""
    params = parameters_from_url('amqps://u:p@secure.example')
    assert params.port == 5671
    assert isinstance(params.ssl_options, pika.SSLOptions)
    assert params.ssl_options.server_hostname == 'secure.example'


def test_other_schemes_are_refused_with_the_password_masked():
    """A wrong scheme is a ConfigurationError naming the key, without the password."""
    with pytest.raises(ConfigurationError) as err:
        parameters_from_url('redis://u:topsecret@h')
    assert "CQRS['url']" in str(err.value)
    assert 'topsecret' not in str(err.value)


@pytest.mark.parametrize(
    'url',
    [
        'amqp://a:1@h1;amqp://a:1@h2',
        ['amqp://a:1@h1', 'amqp://a:1@h2'],
        ' amqp://a:1@h1 ; amqp://a:1@h2 ',
    ],
)
def test_several_urls_give_failover_parameters(url):
    """A list or ';'-separated URLs become one parameter set per broker, in order."""
    settings = parse({'url': url})
    assert [p.host for p in connection_parameters(settings)] == ['h1', 'h2']
    assert split_urls(url) == ['amqp://a:1@h1', 'amqp://a:1@h2']


def test_host_port_user_password_settings():
    """Without `url`, host/port/user/password are used (port may be a string)."""
    settings = parse({'host': 'rabbit', 'port': '5680', 'user': 'me', 'password': 'pw'})
    [params] = connection_parameters(settings, heartbeat=30)
    assert (params.host, params.port, params.credentials.username) == ('rabbit', 5680, 'me')
    assert params.heartbeat == 30
    assert describe(settings) == 'amqp://me:****@rabbit:5680'


def test_passwords_are_masked_everywhere():
    """mask_url hides every password in a text, keeping user and host."""
    text = 'failed: amqp://guest:guest@h1:5672/%2F;amqps://u:s%40cr3t@h2/v'
    masked = mask_url(text)
    assert masked == 'failed: amqp://guest:****@h1:5672/%2F;amqps://u:****@h2/v'
    assert describe(parse({'url': 'amqp://u:pw@h'})) == 'amqp://u:****@h'


def test_classic_queues_have_no_arguments_and_quorum_is_an_option():
    """Default queues are declared exactly like the original's; quorum adds x-queue-type."""
    classic = Topology('cqrs', 'q', 'dead_letter_q', ('a',))
    assert classic.queue_arguments() is None
    quorum = Topology('cqrs', 'q', 'dead_letter_q', ('a',), queue_type='quorum')
    assert quorum.queue_arguments() == {'x-queue-type': 'quorum'}


def test_topology_for_the_registered_replicas_or_the_chosen_ids(settings):
    """Bindings cover every registered replica id, or only the ones given."""
    settings.CQRS = {**settings.CQRS, 'queue': 'svc'}
    from dj_cqrs.conf import get_settings
    from dj_cqrs.registries import ReplicaRegistry

    topology = topology_for(get_settings())
    assert topology.cqrs_ids == tuple(sorted(ReplicaRegistry.models))
    assert (topology.queue, topology.dead_letter_queue) == ('svc', 'dead_letter_svc')
    assert topology_for(get_settings(), {'golden_basic'}).cqrs_ids == ('golden_basic',)


def test_topology_needs_a_queue_and_a_known_queue_type():
    """No queue, or an unknown queue_type, is a ConfigurationError naming the key."""
    with pytest.raises(ConfigurationError, match="CQRS\\['queue'\\]"):
        topology_for(parse({}))
    with pytest.raises(ConfigurationError, match='queue_type'):
        topology_for(parse({'queue': 'q', 'queue_type': 'stream'}))


class _RecordingChannel:
    def __init__(self):
        self.calls = []

    def exchange_declare(self, *args, **kwargs):
        self.calls.append(('exchange', args, kwargs))

    def queue_declare(self, queue, **kwargs):
        self.calls.append(('queue', queue, kwargs))

        class Method:
            message_count = 3

        class Ok:
            method = Method

        return Ok

    def queue_bind(self, queue, exchange, routing_key):
        self.calls.append(('bind', queue, routing_key))


def test_declare_creates_the_original_bindings():
    """Per cqrs_id: queue <- id and cqrs.<queue>.<id>; DLQ <- cqrs.<dlq>.<id>."""
    channel = _RecordingChannel()
    counts = Topology('cqrs', 'q', 'dead_letter_q', ('a', 'b')).declare(channel)
    assert counts == (3, 3)
    assert ('exchange', ('cqrs',), {'exchange_type': 'topic', 'durable': True}) in channel.calls
    queues = [c for c in channel.calls if c[0] == 'queue']
    assert queues == [
        ('queue', 'q', {'durable': True, 'exclusive': False, 'arguments': None}),
        ('queue', 'dead_letter_q', {'durable': True, 'exclusive': False, 'arguments': None}),
    ]
    assert {c[1:] for c in channel.calls if c[0] == 'bind'} == {
        ('q', 'a'),
        ('q', 'cqrs.q.a'),
        ('dead_letter_q', 'cqrs.dead_letter_q.a'),
        ('q', 'b'),
        ('q', 'cqrs.q.b'),
        ('dead_letter_q', 'cqrs.dead_letter_q.b'),
    }


def test_url_query_options_reach_the_connection(cqrs_log):
    """`?heartbeat=5&connection_attempts=3` are honoured; unknown ones are refused, clearly."""
    params = parameters_from_url('amqp://h/?heartbeat=5&connection_attempts=3&retry_delay=0.5')
    assert (params.heartbeat, params.connection_attempts, params.retry_delay) == (5, 3, 0.5)
    with pytest.raises(ConfigurationError, match="option 'frobnicate' is not supported") as info:
        parameters_from_url('amqp://u:pw@h/?frobnicate=1')
    assert 'pw' not in str(info.value)
    with pytest.raises(ConfigurationError, match='not a number'):
        parameters_from_url('amqp://h/?heartbeat=soon')


def test_quorum_queues_are_declared_on_the_broker():
    """queue_type 'quorum' really creates quorum queues (a classic redeclare is refused)."""
    import uuid

    from tests.services import require

    require('rabbitmq')
    token = uuid.uuid4().hex[:8]
    topology = Topology(f'cqrs_ut_{token}', f'q_{token}', f'dlq_{token}', ('a',), 'quorum')
    connection = pika.BlockingConnection(pika.URLParameters('amqp://guest:guest@127.0.0.1/'))
    try:
        topology.declare(connection.channel())
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match='x-queue-type'):
            connection.channel().queue_declare(f'q_{token}', durable=True)
    finally:
        channel = connection.channel()
        channel.queue_delete(f'q_{token}')
        channel.queue_delete(f'dlq_{token}')
        channel.exchange_delete(f'cqrs_ut_{token}')
        connection.close()
