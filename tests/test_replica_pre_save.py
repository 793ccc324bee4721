"""Replica updates run every field's ``pre_save()`` as ``save()`` does (issue 12, A5).

A field that computes its value on save (django-model-utils' ``AutoLastModifiedField``, slug
fields, custom fields; here ``StampField``: ``name@revision``) must hold the computed value
after an update, whichever path applies the message.
"""

from __future__ import annotations

import pytest

from dj_cqrs.consumer import handler
from dj_cqrs.consumer.batch import Delivery, apply_batch
from dj_cqrs.consumer.handler import Action
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.management.bulk import load
from dj_cqrs.wire import encode_body
from tests.dj_replica.models import StampedReplica

pytestmark = pytest.mark.django_db(transaction=True)

UPDATED = '2024-05-01T10:00:00+00:00'


def data(pk: int, revision: int, name: str) -> dict:
    return {'id': pk, 'cqrs_revision': revision, 'cqrs_updated': UPDATED, 'name': name}


def delivery(pk: int, revision: int, name: str) -> Delivery:
    payload = TransportPayload('SAVE', 'stamped', data(pk, revision, name), pk)
    return Delivery(payload.encode(), 'stamped')


def stamps() -> dict[int, str]:
    return dict(StampedReplica.objects.order_by('id').values_list('id', 'stamp'))


def test_one_by_one_update_runs_pre_save():
    """Create then update, message by message: the stamp follows the new name and revision."""
    for message in (delivery(1, 0, 'a'), delivery(1, 1, 'b')):
        assert handler.handle(message.body, 'stamped').action is Action.ACK
    assert stamps() == {1: 'b@1'}


def test_batched_update_runs_pre_save(batch_size):
    """Updates applied in a batch (the row exists, so they are updates) compute the stamp."""
    batch_size(100)
    assert actions(apply_batch([delivery(1, 0, 'a'), delivery(2, 0, 'x')])) == [Action.ACK] * 2
    outcomes = apply_batch([delivery(1, 1, 'b'), delivery(2, 1, 'y'), delivery(1, 2, 'c')])
    assert actions(outcomes) == [Action.ACK] * 3
    assert stamps() == {1: 'c@2', 2: 'y@1'}


def test_bulk_load_update_runs_pre_save():
    """``cqrs_bulk_load`` over existing rows computes the stamp of every updated row."""
    errors: list[str] = []
    load(StampedReplica, [encode_body(data(1, 0, 'a')).decode()], write_err=errors.append)
    result = load(
        StampedReplica,
        [encode_body(data(1, 3, 'b')).decode(), encode_body(data(2, 0, 'n')).decode()],
        write_err=errors.append,
    )
    assert errors == []
    assert result.applied == 2
    assert stamps() == {1: 'b@3', 2: 'n@0'}


def actions(outcomes):
    return [o.action for o in outcomes]
