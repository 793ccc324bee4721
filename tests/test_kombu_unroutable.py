"""KombuTransport over RabbitMQ: a message no queue is bound to is reported, not lost quietly."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.test import override_settings

from dj_cqrs import signals
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.models import OutboxMessage
from dj_cqrs.transport import kombu as kombu_transport
from dj_cqrs.transport.kombu import KombuTransport
from tests.kombu_fixtures import URLS, kombu_settings
from tests.rabbit_capture import payload
from tests.services import require

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def amqp_settings():
    require('rabbitmq')
    suffix = uuid.uuid4().hex[:8]
    with override_settings(CQRS=kombu_settings(URLS['amqp'], suffix)):
        with kombu_transport.connect() as connection:
            channel = connection.default_channel
            queue = kombu_transport.service_queue(connection)(channel)
            queue.declare()
        try:
            yield queue
        finally:
            KombuTransport.clean_connection()
            with kombu_transport.connect() as connection:
                channel = connection.default_channel
                queue(channel).delete()
                kombu_transport.exchange()(channel).delete()


def test_unroutable_message_is_logged_and_not_reported_published(amqp_settings, caplog):
    published = []

    def on_published(sender, payload, **kwargs):
        published.append(payload.pk)

    caplog.set_level(logging.WARNING, logger='django-cqrs')
    signals.message_published.connect(on_published)
    try:
        assert KombuTransport.produce(payload(1, cqrs_id='nobody_listens')) is False
        assert KombuTransport.produce(payload(2)) is True  # the next one is not affected
    finally:
        signals.message_published.disconnect(on_published)
    assert published == [2]
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith('CQRS is unroutable: pk = 1 (nobody_listens), routing_key = nobody_listens')
        for line in lines
    ), lines
    assert not any('pk = 2' in line for line in lines)
    assert not OutboxMessage.objects.exists()  # nowhere to send it later either: not kept
    with kombu_transport.connect() as connection:
        message = amqp_settings(connection.default_channel).get(no_ack=True)
    assert TransportPayload.decode(message.body).pk == 2
