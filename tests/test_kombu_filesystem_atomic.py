"""filesystem://: a consumer polling as fast as it can never reads a half-written message."""

from __future__ import annotations

import threading
import time

import kombu
from django.test import override_settings

from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport import kombu_filesystem


def test_reader_polling_without_pause_gets_every_message_whole(tmp_path):
    folder = str(tmp_path)
    options = {'data_folder_in': folder, 'data_folder_out': folder, 'control_folder': folder}
    total = 400
    cqrs = {
        'transport': 'dj_cqrs.transport.KombuTransport',
        'url': 'filesystem://',
        'transport_options': options,
    }
    with override_settings(CQRS=cqrs):
        writer_connection = kombu_transport.connect()
        reader_connection = kombu_transport.connect()
    assert isinstance(writer_connection.transport, kombu_filesystem.Transport)
    exchange = kombu.Exchange('ex', type='topic')
    queue = kombu.Queue('q', exchange, routing_key='k')
    queue(reader_connection.default_channel).declare()

    def write() -> None:
        producer = writer_connection.Producer()
        for i in range(total):
            producer.publish({'i': i, 'pad': 'x' * 2000}, exchange=exchange, routing_key='k')

    writer = threading.Thread(target=write)
    seen, errors = [], []
    bound = queue(reader_connection.default_channel)
    writer.start()
    deadline = time.monotonic() + 30
    while len(seen) < total and time.monotonic() < deadline:
        try:
            message = bound.get(no_ack=True)
        except Exception as err:  # the stock transport: an empty, half-written file
            errors.append(err)
            continue
        if message is not None:
            seen.append(message.payload['i'])
    writer.join(10)
    writer_connection.release()
    reader_connection.release()
    assert errors == []
    assert sorted(seen) == list(range(total))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.part')]
