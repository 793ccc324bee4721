"""Transports declare what they can do; ``cqrs_status`` and the lag tracker read the flags."""

from __future__ import annotations

import pytest
from django.test import override_settings

from dj_cqrs.transport import BaseTransport, InProcessTransport, TransportMock
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport


@pytest.mark.parametrize(
    ('transport', 'queue_stats', 'dead_letters', 'in_process'),
    [
        (BaseTransport, False, False, False),
        (TransportMock, False, False, False),
        (InProcessTransport, True, False, True),
        (RabbitMQTransport, True, True, False),
        (KombuTransport, True, True, False),
    ],
)
def test_built_in_transports_declare_their_capabilities(
    transport, queue_stats, dead_letters, in_process
):
    """Each transport says whether it reads queues, keeps dead letters, applies in process."""
    assert transport.supports_queue_stats is queue_stats
    assert transport.supports_dead_letters is dead_letters
    assert transport.applies_in_process is in_process


def test_a_subclass_of_the_original_api_declares_what_it_defines():
    """A user's transport written before the flags: defining the method is declaring it."""

    class Original(BaseTransport):
        @staticmethod
        def produce(payload):
            return True

    class Counts(BaseTransport):
        @classmethod
        def dead_letters_count(cls):
            return 0

        @classmethod
        def queue_stats(cls, queue):
            return 0, None

    class Declined(Counts):
        supports_queue_stats = False

    assert not Original.supports_queue_stats and not Original.supports_dead_letters
    assert Counts.supports_queue_stats and Counts.supports_dead_letters
    assert not Declined.supports_queue_stats and Declined.supports_dead_letters
    assert Original.broker_description() == 'Original'
    with pytest.raises(NotImplementedError):
        Original.queue_stats('q')


def test_in_process_queue_stats_count_its_dead_letters():
    """Nothing waits in process; the dead-letter queue holds what was dead-lettered."""
    with override_settings(CQRS={'transport': 'x', 'queue': 'mine'}):
        InProcessTransport.reset()
        assert InProcessTransport.queue_stats('mine') == (0, None)
        assert InProcessTransport.queue_stats('dead_letter_mine') == (0, None)
        assert InProcessTransport.broker_description() == 'in process'
