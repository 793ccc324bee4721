"""The async publisher's own AMQP frames: byte-for-byte what pika writes and reads."""

from __future__ import annotations

import pika
import pytest
from pika import frame, spec

from dj_cqrs.transport import amqp_frames
from dj_cqrs.transport.publish_connection import PublishConnection
from dj_cqrs.transport.publisher import message_properties


def _pika_publish(channel: int, exchange: str, key: str, body: bytes, frame_max: int) -> bytes:
    """What pika's Connection._send_message marshals for the same publish."""
    parts = [
        frame.Method(
            channel, spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=True)
        ).marshal(),
        frame.Header(channel, len(body), message_properties()).marshal(),
    ]
    step = frame_max - 8
    parts += [frame.Body(channel, body[i : i + step]).marshal() for i in range(0, len(body), step)]
    return b''.join(parts)


@pytest.mark.parametrize(
    ('exchange', 'key', 'body', 'frame_max'),
    [
        ('cqrs', 'golden_parent', b'{"signal_type":"SAVE"}', 131072),
        ('cqrs', 'replica_q.golden_parent', b'x' * 300_000, 131072),  # three body frames
        ('ex-\u00e9', 'k\u00e9y', b'{"name":"\\u00e9"}', 4096),  # UTF-8 names
        ('', 'direct', b'1', 4096),  # default exchange
    ],
)
def test_publish_frames_match_pika(exchange, key, body, frame_max):
    properties = amqp_frames.properties_block(message_properties())
    ours = amqp_frames.publish_frames(1, exchange, key, body, properties, frame_max - 8)
    assert ours == _pika_publish(1, exchange, key, body, frame_max)


def test_decoded_by_pika_as_the_same_message():
    body = b'{"cqrs_id":"golden_parent"}'
    properties = amqp_frames.properties_block(message_properties())
    data = amqp_frames.publish_frames(3, 'cqrs', 'golden_parent', body, properties, 131064)
    decoded = []
    while data:
        used, item = frame.decode_frame(data)
        decoded.append(item)
        data = data[used:]
    method, header, content = decoded
    assert method.channel_number == 3
    assert (method.method.exchange, method.method.routing_key, method.method.mandatory) == (
        'cqrs',
        'golden_parent',
        True,
    )
    assert header.body_size == len(body)
    assert header.properties.content_type == 'text/plain'
    assert header.properties.delivery_mode == 2
    assert content.fragment == body


def test_routing_key_over_255_bytes_is_refused_with_a_reason():
    properties = amqp_frames.properties_block(message_properties())
    with pytest.raises(ValueError, match='routing key is 300 bytes long; AMQP allows at most 255'):
        amqp_frames.publish_frames(1, 'cqrs', 'k' * 300, b'{}', properties, 131064)


@pytest.mark.parametrize(
    'method',
    [
        spec.Basic.Ack(delivery_tag=7, multiple=False),
        spec.Basic.Ack(delivery_tag=2**40, multiple=True),
        spec.Basic.Nack(delivery_tag=9, multiple=True, requeue=True),
        spec.Basic.Nack(delivery_tag=1, multiple=False, requeue=False),
    ],
)
def test_confirms_are_read_as_pika_reads_them(method):
    """The fast path for Basic.Ack/Nack gives the same tag and flag as pika's decoder."""
    connection = PublishConnection(pika.ConnectionParameters())
    connection._buffer = frame.Method(1, method).marshal() * 2
    received = connection._frames()
    assert [type(m) for m in received] == [type(method)] * 2
    assert all(
        (m.delivery_tag, m.multiple) == (method.delivery_tag, method.multiple) for m in received
    )


def test_returned_message_split_over_reads_is_reassembled():
    connection = PublishConnection(pika.ConnectionParameters())
    body = b'y' * 5000
    data = b''.join(
        [
            frame.Method(1, spec.Basic.Return(312, 'NO_ROUTE', 'cqrs', 'nobody')).marshal(),
            frame.Header(1, len(body), message_properties()).marshal(),
            frame.Body(1, body[:3000]).marshal(),
            frame.Body(1, body[3000:]).marshal(),
            frame.Method(1, spec.Basic.Ack(delivery_tag=4)).marshal(),
        ]
    )
    received = []
    for start in range(0, len(data), 700):  # as the socket may hand it over
        connection._buffer += data[start : start + 700]
        received += connection._frames()
    (returned, returned_body), ack = received
    assert returned.routing_key == 'nobody' and returned_body == body
    assert isinstance(ack, spec.Basic.Ack) and ack.delivery_tag == 4
