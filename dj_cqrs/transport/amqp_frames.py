"""Basic.Publish frames marshalled directly, for the asynchronous publisher's hot path.

pika builds a ``Basic.Publish`` method object, a ``BasicProperties`` object and three frame
objects for every message and marshals each of them; for the small messages of a master that
is most of the publishing thread's time. Every message ``produce`` sends has the same
properties (``text/plain``, persistent), so the bytes are assembled here from a precomputed
properties block: the same bytes pika writes (``tests/test_amqp_frames.py`` compares them),
several times faster. Messages with other properties (dead letters with an ``expiration``)
keep going through pika.
"""

from __future__ import annotations

import struct

import pika

_FRAME_METHOD = 1
_FRAME_HEADER = 2
_FRAME_BODY = 3
_FRAME_END = b'\xce'
_BASIC = 60
_PUBLISH = 40
_FRAME_HEAD = struct.Struct('>BHI')
_PUBLISH_HEAD = struct.Struct('>HHH')  # class, method, reserved ticket
_HEADER_HEAD = struct.Struct('>HHQ')  # class, weight, body size


def properties_block(properties: pika.BasicProperties) -> bytes:
    """The encoded property flags and values of ``properties`` (computed once per kind)."""
    return b''.join(properties.encode())


def _short_string(value: str, what: str) -> bytes:
    data = value.encode('utf-8')
    if len(data) > 255:
        raise ValueError(f'{what} is {len(data)} bytes long; AMQP allows at most 255: {value!r}')
    return bytes((len(data),)) + data


def publish_frames(
    channel_number: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: bytes,
    body_max_length: int,
    *,
    mandatory: bool = True,
) -> bytes:
    """The method, header and body frames of one ``Basic.Publish``, as one bytes object.

    ``properties`` is :func:`properties_block` of the message's properties; ``body_max_length``
    is the connection's frame size minus the 8 bytes of frame overhead (bodies are split into
    as many body frames as that needs). Raises ValueError for an exchange or routing key that
    does not fit an AMQP short string.
    """
    if body_max_length <= 0:
        raise ValueError(f'body_max_length must be positive, got {body_max_length}')
    arguments = b''.join(
        (
            _PUBLISH_HEAD.pack(_BASIC, _PUBLISH, 0),
            _short_string(exchange, 'exchange'),
            _short_string(routing_key, 'routing key'),
            b'\x01' if mandatory else b'\x00',
        )
    )
    header = _HEADER_HEAD.pack(_BASIC, 0, len(body)) + properties
    parts = [
        _FRAME_HEAD.pack(_FRAME_METHOD, channel_number, len(arguments)),
        arguments,
        _FRAME_END,
        _FRAME_HEAD.pack(_FRAME_HEADER, channel_number, len(header)),
        header,
        _FRAME_END,
    ]
    for start in range(0, len(body), body_max_length):
        chunk = body[start : start + body_max_length]
        parts += (_FRAME_HEAD.pack(_FRAME_BODY, channel_number, len(chunk)), chunk, _FRAME_END)
    return b''.join(parts)
