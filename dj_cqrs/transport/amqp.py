"""AMQP connection settings (``CQRS['url']`` or ``host``/``port``/...) and topology for pika."""

from __future__ import annotations

import ast
import logging
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pika

from dj_cqrs import conf
from dj_cqrs.broker_urls import mask_url, quote_password, split_urls
from dj_cqrs.conf import CQRSSettings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.routing import bindings_for

logger = logging.getLogger(LOGGER_NAME)

# Connection options a URL may carry in its query string (``amqp://h/?heartbeat=30``), or
# ``CQRS['transport_options']`` (for every URL; the URL's win); anything else is refused.
# TLS files are ``CQRS['tls']``.
_URL_OPTIONS: dict[str, Any] = {
    'heartbeat': int,
    'connection_attempts': int,
    'retry_delay': float,
    'socket_timeout': float,
    'stack_timeout': float,
    'blocked_connection_timeout': float,
    'channel_max': int,
    'frame_max': int,
    'locale': str,
    'tcp_options': dict,
}
_TCP_OPTIONS = ('TCP_KEEPIDLE', 'TCP_KEEPINTVL', 'TCP_KEEPCNT', 'TCP_USER_TIMEOUT')


def tls_context(tls: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name, with
    ``CQRS['tls']``'s ``ca_certs`` (default: the system's), ``certfile`` and ``keyfile``."""
    tls = tls or {}
    try:
        context = ssl.create_default_context(cafile=tls.get('ca_certs'))
        if tls.get('certfile'):
            context.load_cert_chain(tls['certfile'], tls.get('keyfile'))
    except (OSError, ssl.SSLError) as err:
        # Refused at start-up (system check dj_cqrs.E030), not at the first publish.
        raise ConfigurationError(
            f"CQRS['tls'] = {dict(tls)!r} cannot be used: {type(err).__name__}: {err}"
        ) from err
    return context


def parameters_from_url(
    url: str,
    tls_options: Mapping[str, str] | None = None,
    transport_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> pika.ConnectionParameters:
    """pika parameters of one ``amqp://`` or ``amqps://`` URL; options from its query string
    win over ``CQRS['transport_options']``, an unknown or malformed one is refused."""
    url = quote_password(url)  # a password holding '/', '?' or '#' must not end the host part
    try:
        parts = urlsplit(url)
    except ValueError:  # its text quotes the netloc, password included
        raise ConfigurationError(f"CQRS['url'] = {mask_url(url)!r} cannot be parsed.") from None
    if parts.scheme not in ('amqp', 'amqps'):
        raise ConfigurationError(
            f"CQRS['url'] = {mask_url(url)!r}: scheme must be 'amqp' or 'amqps' for "
            'RabbitMQTransport.'
        )
    tls, host = parts.scheme == 'amqps', parts.hostname or 'localhost'
    credentials = pika.PlainCredentials(
        unquote(parts.username) if parts.username is not None else 'guest',
        unquote(parts.password) if parts.password is not None else 'guest',
        erase_on_connect=True,
    )
    kwargs: dict[str, Any] = {
        'host': host,
        'port': parts.port or (5671 if tls else 5672),
        'virtual_host': unquote(parts.path.removeprefix('/')) or '/',
        'credentials': credentials,
    }
    if tls:
        kwargs['ssl_options'] = pika.SSLOptions(tls_context(tls_options), host)
    given = {
        **_options(dict(transport_options or {}), "CQRS['transport_options']"),
        **_options(dict(parse_qsl(parts.query)), f"CQRS['url'] = {mask_url(url)!r}"),
    }
    return pika.ConnectionParameters(**kwargs, **{**options, **given})


def _options(raw: dict[str, Any], where: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _URL_OPTIONS.get(key)
        if kind is None:
            hint = " (TLS files go in CQRS['tls'])" if key in conf.TLS_OPTIONS else ''
            raise ConfigurationError(
                f'{where}: option {key!r} is not supported{hint} (supported: '
                f'{", ".join(sorted(_URL_OPTIONS))}).'
            )
        if kind is dict:
            options[key] = _tcp_options(value, where)
            continue
        if isinstance(value, str) and kind is not str:
            try:
                value = kind(value)
            except ValueError:
                raise ConfigurationError(
                    f'{where}: option {key}={value!r} is not a number.'
                ) from None
        elif not isinstance(value, (int, float, str)) or isinstance(value, bool):
            raise ConfigurationError(f'{where}: option {key}={value!r} has the wrong type.')
        options[key] = kind(value)
    return options


def _tcp_options(value: Any, where: str) -> dict[str, int]:
    """``tcp_options``: a dict of TCP socket options (in a URL, as a Python dict literal)."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            value = None
    if not isinstance(value, dict) or not all(
        key in _TCP_OPTIONS and isinstance(number, int) for key, number in value.items()
    ):
        raise ConfigurationError(
            f'{where}: tcp_options must be a dict of {", ".join(_TCP_OPTIONS)} to integers, '
            f'got {value!r}.'
        )
    return dict(value)


def connection_parameters(
    settings: CQRSSettings, **options: Any
) -> list[pika.ConnectionParameters]:
    """Every broker to try, in order. ``options`` go to each (e.g. ``heartbeat``)."""
    if settings.url:
        urls = split_urls(settings.url)
        if not urls:
            raise ConfigurationError("CQRS['url'] is empty.")
        return [
            parameters_from_url(url, settings.tls, settings.transport_options, **options)
            for url in urls
        ]
    credentials = pika.PlainCredentials(
        settings.user or 'guest', settings.password or 'guest', erase_on_connect=True
    )
    where = "CQRS['transport_options']"
    return [
        pika.ConnectionParameters(
            host=settings.host or 'localhost',
            port=int(settings.port or 5672),
            credentials=credentials,
            **{**options, **_options(dict(settings.transport_options), where)},
        )
    ]


def describe(settings: CQRSSettings) -> str:
    """Where we connect, for log lines and errors (passwords masked)."""
    if settings.url:
        return mask_url(';'.join(split_urls(settings.url)))
    host, port = settings.host or 'localhost', settings.port or 5672
    return f'amqp://{settings.user or "guest"}:****@{host}:{port}'


@dataclass(frozen=True)
class Topology:
    """The original's exchange, queues and bindings for one replica service."""

    exchange: str
    queue: str
    dead_letter_queue: str
    cqrs_ids: tuple[str, ...]
    queue_type: str = 'classic'

    def queue_arguments(self) -> dict[str, Any] | None:
        # Classic queues are declared without arguments, exactly as the original does, so a
        # queue the original created is redeclared without a PRECONDITION_FAILED error.
        return {'x-queue-type': 'quorum'} if self.queue_type == 'quorum' else None

    def declare(self, channel: Any) -> tuple[int, int]:
        """Declare everything; returns the message counts of (queue, dead-letter queue)."""
        channel.exchange_declare(self.exchange, exchange_type='topic', durable=True)
        arguments = self.queue_arguments()
        main = channel.queue_declare(self.queue, durable=True, exclusive=False, arguments=arguments)
        dead = channel.queue_declare(
            self.dead_letter_queue, durable=True, exclusive=False, arguments=arguments
        )
        for cqrs_id in self.cqrs_ids:
            for key in bindings_for(cqrs_id, self.queue):
                channel.queue_bind(self.queue, self.exchange, routing_key=key)
            channel.queue_bind(
                self.dead_letter_queue,
                self.exchange,
                routing_key=f'cqrs.{self.dead_letter_queue}.{cqrs_id}',
            )
        return main.method.message_count, dead.method.message_count


def topology_for(settings: CQRSSettings, cqrs_ids: Iterable[str] | None = None) -> Topology:
    """The topology of this replica service (bindings limited to ``cqrs_ids`` if given)."""
    from dj_cqrs.registries import ReplicaRegistry

    if not settings.queue:
        raise ConfigurationError("CQRS['queue'] must be set to consume messages.")
    if settings.queue_type not in ('classic', 'quorum'):
        raise ConfigurationError(
            f"CQRS['queue_type'] must be 'classic' or 'quorum', got {settings.queue_type!r}."
        )
    ids = sorted(cqrs_ids) if cqrs_ids else sorted(ReplicaRegistry.models)
    return Topology(
        exchange=settings.exchange,
        queue=settings.queue,
        dead_letter_queue=settings.dead_letter_queue,
        cqrs_ids=tuple(ids),
        queue_type=settings.queue_type,
    )
