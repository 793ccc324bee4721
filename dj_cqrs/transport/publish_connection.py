"""A lean AMQP 0-9-1 connection for publishing with confirms, driven by one thread.

The asynchronous publisher (:mod:`dj_cqrs.transport.async_publisher`) needs very little of
AMQP: open a connection and one channel in confirm mode, declare an exchange, write
``Basic.Publish`` frames, and read back ``Basic.Ack``/``Basic.Nack``/``Basic.Return``,
heartbeats and closes. pika's ``SelectConnection`` does that through several layers of
callbacks and poller updates for every write and every confirm, which costs the publishing
thread (and, through the GIL, the application threads) about 50 µs per message. This class
does it with a plain (optionally TLS) socket: pika is still used for what it is good at here,
the protocol's method classes (``pika.spec``) and the frame codec (``pika.frame``), and the
connection parameters are the same ``pika.ConnectionParameters`` the rest of the transport
uses (host, port, vhost, credentials, TLS, heartbeat, frame size, socket timeout).

Not thread-safe: one thread owns a connection.
"""

from __future__ import annotations

import platform
import select
import socket
import ssl
import struct
import time
from typing import Any

import pika
from pika import frame as amqp_frame
from pika import spec

from dj_cqrs.transport import amqp_frames

CHANNEL = 1
_PROTOCOL_HEADER = b'AMQP\x00\x00\x09\x01'
_HEARTBEAT_FRAME = b'\x08\x00\x00\x00\x00\x00\x00\xce'
# A method frame on channel 1 with a 13-byte payload: class 60 (basic), method, delivery tag,
# bits, frame end. Ack (80) and Nack (120) both have that shape.
_ACK_PREFIX = b'\x01\x00\x01\x00\x00\x00\x0d\x00\x3c'
_ACK_FRAME = struct.Struct('>HHQBB')
_ACK_FRAME_SIZE = 7 + 13 + 1


class ConnectionLost(Exception):
    """The broker closed the connection or the channel, or the socket failed."""


class PublishConnection:
    """One connection with one confirmed channel (see the module docstring)."""

    def __init__(self, parameters: pika.ConnectionParameters) -> None:
        self.parameters = parameters
        self.sock: Any = None
        self.heartbeat = 0
        self.body_max_length = 0
        self.blocked = False
        self._send_timeout = parameters.socket_timeout or 10.0
        self._buffer = b''
        self._returning: list[Any] | None = None  # [Basic.Return, body size, chunks]
        self._last_sent = self._last_received = time.monotonic()

    # Opening and closing --------------------------------------------------------------------

    def open(self) -> None:
        """Connect, authenticate, tune, open the vhost and a confirmed channel (blocking)."""
        params = self.parameters
        timeout = params.socket_timeout or 10.0
        sock = socket.create_connection((params.host, params.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if params.ssl_options is not None:
                sock = params.ssl_options.context.wrap_socket(
                    sock, server_hostname=params.ssl_options.server_hostname
                )
            self.sock = sock
            sock.sendall(_PROTOCOL_HEADER)
            start = self._expect(spec.Connection.Start, timeout)
            mechanism, response = params.credentials.response_for(start)
            if mechanism is None:
                raise ConnectionLost(
                    f'the broker offers {start.mechanisms!r}; none fits the credentials given'
                )
            self._send_method(
                spec.Connection.StartOk(
                    client_properties=self._client_properties(),
                    mechanism=mechanism,
                    response=response,
                    locale=params.locale,
                ),
                channel=0,
            )
            tune = self._expect(spec.Connection.Tune, timeout)
            frame_max = _lowest(params.frame_max, tune.frame_max)
            channel_max = _lowest(params.channel_max, tune.channel_max)
            heartbeat = tune.heartbeat if params.heartbeat is None else params.heartbeat
            if callable(heartbeat):
                heartbeat = heartbeat(self, tune.heartbeat)
            self.heartbeat = int(heartbeat or 0)
            self.body_max_length = (frame_max or 131072) - 8
            self._send_method(
                spec.Connection.TuneOk(channel_max, frame_max, self.heartbeat), channel=0
            )
            self._send_method(spec.Connection.Open(virtual_host=params.virtual_host), channel=0)
            self._expect(spec.Connection.OpenOk, timeout)
            self._send_method(spec.Channel.Open())
            self._expect(spec.Channel.OpenOk, timeout)
            self._send_method(spec.Confirm.Select())
            self._expect(spec.Confirm.SelectOk, timeout)
        except BaseException:
            self.abort()
            raise
        if getattr(params.credentials, 'erase_on_connect', False):
            params.credentials.erase_credentials()
        # From here on the thread waits in select(); reads never block.
        self._send_timeout = timeout
        sock.setblocking(False)

    def close(self, timeout: float = 1.0) -> None:
        """Close politely (Connection.Close, wait briefly for CloseOk), then drop the socket."""
        if self.sock is None:
            return
        try:
            self._send_method(spec.Connection.Close(200, 'Normal shutdown', 0, 0), channel=0)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for received in self.read(timeout=deadline - time.monotonic()):
                    if isinstance(received, spec.Connection.CloseOk):
                        return
        except (OSError, ConnectionLost):
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the socket without a word to the broker."""
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def fileno(self) -> int:
        return self.sock.fileno()

    # Writing ------------------------------------------------------------------------------

    def declare_exchange(self, exchange: str) -> None:
        """Declare a durable topic exchange (the answer is read, and ignored, later)."""
        self._send_method(spec.Exchange.Declare(exchange=exchange, type='topic', durable=True))

    def publish_frames(
        self, exchange: str, routing_key: str, body: bytes, properties: bytes
    ) -> bytes:
        """The bytes of one mandatory ``Basic.Publish`` on this connection's channel."""
        return amqp_frames.publish_frames(
            CHANNEL, exchange, routing_key, body, properties, self.body_max_length
        )

    def send(self, data: bytes) -> None:
        """Write ``data`` (whole frames) to the socket; OSError if it fails."""
        sock = self.sock
        if sock is None:
            raise ConnectionLost('the connection is closed')
        view = memoryview(data)
        deadline = None
        while view:
            try:
                view = view[sock.send(view) :]
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                # The socket buffer is full (a large batch, or a slow broker): wait for room.
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._send_timeout
                if now >= deadline:
                    raise ConnectionLost(
                        f'could not write to the broker for {self._send_timeout} s'
                    ) from None
                select.select([], [sock], [], deadline - now)
        self._last_sent = time.monotonic()

    def keep_alive(self) -> None:
        """Send a heartbeat if due; raise ConnectionLost if the broker has gone silent."""
        if not self.heartbeat:
            return
        now = time.monotonic()
        if now - self._last_received > 2 * self.heartbeat:
            raise ConnectionLost(f'no data from the broker for {2 * self.heartbeat} s')
        if now - self._last_sent > self.heartbeat / 2:
            self.send(_HEARTBEAT_FRAME)

    def pending(self) -> bool:
        """Whether decrypted bytes wait in the TLS layer (select() cannot see them)."""
        pending = getattr(self.sock, 'pending', None)
        return bool(pending and pending())

    # Reading ------------------------------------------------------------------------------

    def read(self, timeout: float) -> list[Any]:
        """What the broker said, waiting up to ``timeout`` seconds for it (see read_nowait)."""
        sock = self.sock
        if sock is None:
            raise ConnectionLost('the connection is closed')
        if not self.pending():
            readable, _, _ = select.select([sock], [], [], max(timeout, 0.0))
            if not readable:
                return []
        return self.read_nowait()

    def read_nowait(self) -> list[Any]:
        """What the broker said since the last call, without waiting.

        Returns method objects (``Basic.Ack``, ``Basic.Nack``, ``Exchange.DeclareOk``...) and,
        for a returned message, a ``(Basic.Return, body)`` tuple. Answers the broker's
        ``Connection.Close``/``Channel.Close`` and then raises :class:`ConnectionLost`.
        """
        sock = self.sock
        if sock is None:
            raise ConnectionLost('the connection is closed')
        chunks = []
        try:
            while True:
                data = sock.recv(131072)
                if not data:
                    raise ConnectionLost('the broker closed the socket')
                chunks.append(data)
                if len(data) < 131072 and not self.pending():
                    break
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except OSError as err:
            raise ConnectionLost(f'{type(err).__name__}: {err}') from err
        if not chunks:
            return []
        self._last_received = time.monotonic()
        self._buffer += b''.join(chunks)
        return self._frames()

    def _frames(self) -> list[Any]:
        out: list[Any] = []
        buffer = self._buffer
        while buffer:
            if buffer.startswith(_ACK_PREFIX) and len(buffer) >= _ACK_FRAME_SIZE:
                # Basic.Ack/Basic.Nack on our channel, the bulk of what the broker says.
                _, method_id, tag, bits, end = _ACK_FRAME.unpack_from(buffer, 7)
                if end == 0xCE and method_id in (80, 120):
                    kind = spec.Basic.Ack if method_id == 80 else spec.Basic.Nack
                    out.append(kind(delivery_tag=tag, multiple=bool(bits & 1)))
                    buffer = buffer[_ACK_FRAME_SIZE:]
                    continue
            try:
                consumed, decoded = amqp_frame.decode_frame(buffer)
            except Exception as err:
                raise ConnectionLost(f'undecodable frame from the broker: {err}') from err
            if not consumed:
                break
            buffer = buffer[consumed:]
            self._handle(decoded, out)
        self._buffer = buffer
        return out

    def _handle(self, decoded: Any, out: list[Any]) -> None:
        if isinstance(decoded, amqp_frame.Heartbeat):
            return
        if isinstance(decoded, amqp_frame.Method):
            method = decoded.method
            if isinstance(method, spec.Basic.Return):
                self._returning = [method, None, []]
            elif isinstance(method, spec.Connection.Close):
                self._send_quietly(spec.Connection.CloseOk(), channel=0)
                raise ConnectionLost(
                    f'the broker closed the connection: ({method.reply_code}) {method.reply_text}'
                )
            elif isinstance(method, spec.Channel.Close):
                self._send_quietly(spec.Channel.CloseOk())
                raise ConnectionLost(
                    f'the broker closed the channel: ({method.reply_code}) {method.reply_text}'
                )
            elif isinstance(method, spec.Connection.Blocked):
                self.blocked = True
            elif isinstance(method, spec.Connection.Unblocked):
                self.blocked = False
            else:
                out.append(method)
            return
        returning = self._returning
        if returning is None:
            return
        if isinstance(decoded, amqp_frame.Header):
            returning[1] = decoded.body_size
        elif isinstance(decoded, amqp_frame.Body):
            returning[2].append(decoded.fragment)
        if returning[1] is not None and sum(map(len, returning[2])) >= returning[1]:
            self._returning = None
            out.append((returning[0], b''.join(returning[2])))

    # Helpers -------------------------------------------------------------------------------

    def _send_method(self, method: Any, channel: int = CHANNEL) -> None:
        self.send(amqp_frame.Method(channel, method).marshal())

    def _send_quietly(self, method: Any, channel: int = CHANNEL) -> None:
        try:
            self._send_method(method, channel)
        except (OSError, ConnectionLost):
            pass

    def _expect(self, kind: type, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionLost(f'no {kind.NAME} from the broker within {timeout} s')
            for received in self.read(timeout=left):
                if isinstance(received, kind):
                    return received

    def _client_properties(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            'product': 'dj_cqrs publisher',
            'platform': f'Python {platform.python_version()}',
            'capabilities': {
                'authentication_failure_close': True,
                'basic.nack': True,
                'connection.blocked': True,
                'consumer_cancel_notify': True,
                'publisher_confirms': True,
            },
            'information': 'https://pypi.org/project/pika',
            'version': pika.__version__,
        }
        properties.update(self.parameters.client_properties or {})
        return properties


def _lowest(client: int | None, server: int) -> int:
    """The AMQP tune rule: the lower of two limits, where 0 means none."""
    values = [v for v in (client, server) if v]
    return min(values) if values else 0
