"""``amqps://`` for KombuTransport: the broker's certificate *and host name* are verified.

Kombu's py-amqp transport checks an ``amqps://`` broker's certificate against the CA bundle
but not the name in it, unless ``ssl['server_hostname']`` is set: any certificate a trusted CA
issued for another host would be accepted (and the password sent). Kombu can fill that name
itself, but it does so after rewriting ``localhost`` as ``127.0.0.1``, and by writing into the
shared ``ssl`` options, so every failover host would be checked against the first one's name.
Here each connection attempt names the host of the URL it connects to, as pika does for
RabbitMQTransport. ``CQRS['tls']`` adds a CA bundle and a client certificate to both.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any, cast

import kombu
from kombu.transport import pyamqp


def is_tls(url: str) -> bool:
    return url.split('://', 1)[0].lower() == 'amqps'


def ssl_options(tls: Mapping[str, str]) -> dict[str, Any]:
    """py-amqp's TLS options: certificate required, ``ca_certs``/``certfile``/``keyfile``."""
    return {'cert_reqs': ssl.CERT_REQUIRED, **tls}


class Transport(pyamqp.SSLTransport):
    """py-amqp over TLS, verifying that the certificate names the URL's host."""

    def __init__(self, client: kombu.Connection, *args: Any, **kwargs: Any) -> None:
        # The URL's own host, before py-amqp's 'localhost' -> '127.0.0.1' rewrite.
        self.server_hostname = client.hostname
        super().__init__(client, *args, **kwargs)

    def establish_connection(self) -> Any:
        client = cast(kombu.Connection, self.client)  # (kombu's __init__ set it)
        base = client.ssl if isinstance(client.ssl, dict) else {}
        client.ssl = {**base, 'server_hostname': self.server_hostname}
        return super().establish_connection()


class Connection(kombu.Connection):
    """A kombu connection whose ``amqps://`` URLs (failover ones too) use :class:`Transport`."""

    def __init__(self, urls: Sequence[str], tls: Mapping[str, str], **kwargs: Any) -> None:
        self._tls_options = ssl_options(tls)
        first = urls[0]
        if is_tls(first):
            kwargs.update(transport=Transport, ssl=dict(self._tls_options))
        super().__init__(first if len(urls) == 1 else list(urls), **kwargs)

    def switch(self, conn_str: str) -> None:
        # Kombu takes the transport from the next URL's scheme: keep ours for amqps.
        super().switch(conn_str)
        if is_tls(conn_str):
            self.transport_cls = Transport
            self.ssl = dict(self._tls_options)
        else:
            self.ssl = False
