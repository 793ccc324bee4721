"""``cqrs_save``/``cqrs_delete`` receive exactly the original's call (issue 12, A3).

django-cqrs 3.1 calls ``cqrs_save(data, previous_data=<as sent>)`` for a SAVE, adds
``sync=True`` only for a SYNC, and ``meta=`` only for ``CQRS_META`` models. Overrides taking
``**kwargs`` (DB-less consumers) or written without a ``sync`` parameter rely on it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from dj_cqrs.consumer import handler
from dj_cqrs.consumer.batch import Delivery, apply_batch
from dj_cqrs.consumer.handler import Action
from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin
from dj_cqrs.wire import encode_body


class KwargsConsumer(RawReplicaMixin):
    """A DB-less consumer that records the keyword arguments of every call."""

    CQRS_ID = 'call_args_kwargs'
    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    @classmethod
    def cqrs_save(cls, master_data, **kwargs):
        cls.calls.append(('save', kwargs))
        return True

    @classmethod
    def cqrs_delete(cls, master_data, **kwargs):
        cls.calls.append(('delete', kwargs))
        return True


class MetaKwargsConsumer(KwargsConsumer):
    CQRS_ID = 'call_args_meta'
    CQRS_META = True
    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []


class NoSyncParameter(RawReplicaMixin):
    """Written as the original's docs show, without ``sync`` or ``meta``: SAVEs must apply."""

    CQRS_ID = 'call_args_no_sync'
    seen: ClassVar[list[Any]] = []

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None):
        cls.seen.append(previous_data)
        return True


for _consumer in (KwargsConsumer, MetaKwargsConsumer, NoSyncParameter):
    ReplicaMeta.register(_consumer)


def body(cqrs_id: str, signal: str, **extra: Any) -> bytes:
    message = {
        'signal_type': signal,
        'cqrs_id': cqrs_id,
        'instance_data': {'id': 1, 'cqrs_revision': 0, 'cqrs_updated': '2024-01-01 00:00:00+00:00'},
        'instance_pk': 1,
        'correlation_id': None,
        'retries': 0,
        'expires': None,
        **extra,
    }
    return encode_body(message)


def one_by_one(bodies, routing_key):
    return [handler.handle(b, routing_key) for b in bodies]


def batched(bodies, routing_key):
    return apply_batch([Delivery(b, routing_key) for b in bodies])


@pytest.fixture(params=[one_by_one, batched], ids=['one-by-one', 'batched'])
def deliver(request, batch_size):
    batch_size(100)
    KwargsConsumer.calls.clear()
    MetaKwargsConsumer.calls.clear()
    NoSyncParameter.seen.clear()
    return request.param


def test_save_sync_and_delete_get_the_originals_keyword_arguments(deliver):
    """previous_data as sent ({} stays {}, absent stays None); sync only for SYNC."""
    cqrs_id = 'call_args_kwargs'
    outcomes = deliver(
        [
            body(cqrs_id, 'SAVE', previous_data={}),
            body(cqrs_id, 'SAVE'),
            body(cqrs_id, 'SAVE', previous_data={'name': 'old'}, meta={'m': 1}),
            body(cqrs_id, 'SYNC', previous_data=None),
            body(cqrs_id, 'DELETE', meta={'m': 1}),
        ],
        cqrs_id,
    )
    assert [o.action for o in outcomes] == [Action.ACK] * 5
    assert KwargsConsumer.calls == [
        ('save', {'previous_data': {}}),
        ('save', {'previous_data': None}),
        ('save', {'previous_data': {'name': 'old'}}),
        ('save', {'previous_data': None, 'sync': True}),
        ('delete', {}),
    ]


def test_meta_models_also_get_meta(deliver):
    """CQRS_META adds ``meta=`` to every call, and nothing else changes."""
    cqrs_id = 'call_args_meta'
    outcomes = deliver(
        [
            body(cqrs_id, 'SAVE', previous_data={}, meta={'m': 1}),
            body(cqrs_id, 'SYNC', meta=None),
            body(cqrs_id, 'DELETE', meta=[1]),
        ],
        cqrs_id,
    )
    assert [o.action for o in outcomes] == [Action.ACK] * 3
    assert MetaKwargsConsumer.calls == [
        ('save', {'previous_data': {}, 'meta': {'m': 1}}),
        ('save', {'previous_data': None, 'meta': None, 'sync': True}),
        ('delete', {'meta': [1]}),
    ]


def test_override_without_sync_parameter_applies_saves(deliver):
    """``cqrs_save(cls, master_data, previous_data=None)`` works for SAVE messages."""
    cqrs_id = 'call_args_no_sync'
    outcomes = deliver([body(cqrs_id, 'SAVE', previous_data={})], cqrs_id)
    assert [o.action for o in outcomes] == [Action.ACK]
    assert NoSyncParameter.seen == [{}]
