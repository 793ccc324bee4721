"""``amqps://`` for KombuTransport: the broker's certificate *and host name* are verified.

py-amqp checks the host name only when ``ssl['server_hostname']`` is set, and Kombu fills it
after rewriting ``localhost`` and for the first failover host only: here each connection
attempt names the host of its own URL, as pika does for RabbitMQTransport.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any, cast

import kombu
from kombu.transport import pyamqp


def is_tls(url: str) -> bool:
    return url.split('://', 1)[0].lower() == 'amqps'


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
        # py-amqp's TLS options: certificate required, ``ca_certs``/``certfile``/``keyfile``.
        self._tls_options = {'cert_reqs': ssl.CERT_REQUIRED, **tls}
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
