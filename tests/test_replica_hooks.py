"""A replica model's hooks are called wherever the original called them, on every path.

The fast paths (batched apply, compare-and-set updates, bulk load) write rows without calling
the hooks; they may only be taken while the hooks are the library's own. Each test first runs
messages through a path (so that whatever the path remembers about the model is remembered),
then overrides a hook as a user or a test suite would, and checks that the override is called.
"""

from __future__ import annotations

import functools
import io
import json
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import models

from dj_cqrs.consumer import handler
from dj_cqrs.consumer.batch import Delivery, apply_batch
from dj_cqrs.consumer.handler import Action
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.mixins import ReplicaMixin
from tests.dj_replica.models import CounterReplica

pytestmark = pytest.mark.django_db(transaction=True)

UPDATED = '2024-05-01T10:00:00+00:00'


def body(pk, revision, value=1, signal='SAVE', **data):
    instance_data = {'id': pk, 'cqrs_revision': revision, 'cqrs_updated': UPDATED, **data}
    if value is not None:
        instance_data['value'] = value
    return TransportPayload(signal, 'counter', instance_data, pk).encode()


def one_by_one(bodies):
    return [handler.handle(b, 'counter') for b in bodies]


def batched(bodies):
    # A batch of one is applied one by one: a second message makes it a real batch.
    return apply_batch([Delivery(b, 'counter') for b in [*bodies, body(999, 0)]])[:-1]


def bulk_load(bodies):
    lines = [json.dumps(TransportPayload.decode(b).instance_data) for b in bodies]
    call_command(
        'cqrs_bulk_load', '-i', '-', stdin=io.StringIO('\n'.join(['counter', *lines])),
        stderr=io.StringIO(),
    )


PATHS = {'one_by_one': one_by_one, 'batched': batched, 'bulk_load': bulk_load}


def warm_up(apply):
    """Create and update a row through the path, as earlier messages would have."""
    apply([body(100, 0)])
    apply([body(100, 1)])


def spy(name, calls):
    """An override of hook ``name`` that records its call and does what the default does."""
    default = ReplicaMixin.__dict__[name]
    if isinstance(default, classmethod):

        def hook(cls, *args, **kwargs):
            calls.append(name)
            return default.__func__(cls, *args, **kwargs)

        return classmethod(hook)

    def method(self, *args, **kwargs):
        calls.append(name)
        return default(self, *args, **kwargs)

    return method


# The messages that make each hook run, and the row they leave.
CASES = {
    'cqrs_save': ([body(1, 0, value=5)], {1: (5, 0)}),
    'cqrs_create': ([body(1, 0, value=5)], {1: (5, 0)}),
    'cqrs_update': ([body(100, 2, value=7)], {100: (7, 2)}),
    'cqrs_delete': ([body(100, 2, signal='DELETE')], {}),
}


@pytest.mark.parametrize(
    ('path', 'hook'),
    [
        (path, hook)
        for path in PATHS
        for hook in CASES
        if not (path == 'bulk_load' and hook == 'cqrs_delete')  # a dump holds no deletes
    ],
)
def test_overridden_write_hook_is_called_on_every_path(path, hook, monkeypatch):
    """``cqrs_save``/``cqrs_create``/``cqrs_update``/``cqrs_delete`` overrides are called on
    the one-by-one path, the batched path and in ``cqrs_bulk_load``, even when the path has
    already applied messages of the model before the override appeared."""
    apply = PATHS[path]
    warm_up(apply)
    calls = []
    monkeypatch.setattr(CounterReplica, hook, spy(hook, calls))
    messages, expected = CASES[hook]
    apply(messages)
    assert calls, f'{hook} was not called'
    rows = {
        pk: (value, revision)
        for pk, value, revision in CounterReplica.objects.exclude(id__in=[999]).values_list(
            'id', 'value', 'cqrs_revision'
        )
        if pk != 100 or 100 in expected
    }
    assert {pk: rows.get(pk) for pk in expected} == expected


@pytest.mark.parametrize('path', ['one_by_one', 'batched'])
def test_overridden_retry_hooks_decide_on_every_path(path, monkeypatch):
    """``should_retry_cqrs`` and ``get_cqrs_retry_delay`` overrides decide what happens to a
    message that failed (here: a SAVE without the required ``value``)."""
    apply = PATHS[path]
    warm_up(apply)
    monkeypatch.setattr(CounterReplica, 'get_cqrs_retry_delay', staticmethod(lambda n: 42))
    (outcome,) = apply([body(2, 0, value=None)])
    assert (outcome.action, outcome.delay) == (Action.RETRY, 42)

    seen = []

    def should_retry_cqrs(current_retry, exception=None):
        seen.append(current_retry)
        return False

    monkeypatch.setattr(CounterReplica, 'should_retry_cqrs', staticmethod(should_retry_cqrs))
    (outcome,) = apply([body(2, 0, value=None)])
    assert outcome.action is Action.DEAD_LETTER
    assert seen == [0]


# --------------------------------------------------------------------------------------------
# cqrs_bulk_load: any callable is an override


def _decorated(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)

    return wrapper


class _Store:
    """Another object whose bound method stands in for the hook."""

    def __init__(self):
        self.seen = []

    def cqrs_save(self, master_data, previous_data=None, sync=False, meta=None):
        self.seen.append(master_data['id'])
        return ReplicaMixin.cqrs_save.__func__(CounterReplica, master_data, previous_data, sync)


def _make_override(kind, seen):
    default = ReplicaMixin.cqrs_save.__func__

    def record(master_data, *args, **kwargs):
        seen.append(master_data['id'])
        return default(CounterReplica, master_data, *args, **kwargs)

    if kind == 'mock':
        return mock.Mock(side_effect=record)
    if kind == 'staticmethod':
        return staticmethod(record)
    if kind == 'decorated_classmethod':
        return classmethod(_decorated(lambda cls, data, *a, **kw: record(data, *a, **kw)))
    store = _Store()
    store.seen = seen
    return store.cqrs_save


@pytest.mark.parametrize(
    'kind', ['mock', 'staticmethod', 'decorated_classmethod', 'bound_method_of_another_object']
)
def test_bulk_load_calls_any_callable_cqrs_save(kind, monkeypatch):
    """A ``cqrs_save`` that is not a plain classmethod is called for every line, instead of
    ending the whole command with an ``AttributeError``."""
    seen = []
    monkeypatch.setattr(CounterReplica, 'cqrs_save', _make_override(kind, seen))
    err = io.StringIO()
    lines = [json.dumps({'id': pk, 'value': pk, 'cqrs_revision': 0, 'cqrs_updated': UPDATED})
             for pk in (1, 2)]
    call_command(
        'cqrs_bulk_load', '-i', '-', stdin=io.StringIO('\n'.join(['counter', *lines])),
        stderr=err,
    )
    assert seen == [1, 2]
    assert err.getvalue().endswith('Done!\n2 instance(s) loaded.\n')
    assert dict(CounterReplica.objects.values_list('id', 'value')) == {1: 1, 2: 2}


def test_bulk_load_calls_a_mocked_cqrs_create():
    """The same for ``cqrs_create``: a mock is an override, called for each new row."""
    line = json.dumps({'id': 1, 'value': 3, 'cqrs_revision': 0, 'cqrs_updated': UPDATED})
    with mock.patch.object(CounterReplica, 'cqrs_create', return_value=True) as create:
        call_command(
            'cqrs_bulk_load', '-i', '-', stdin=io.StringIO(f'counter\n{line}'),
            stderr=io.StringIO(),
        )
    assert create.call_count == 1
    assert create.call_args.args[1]['value'] == 3


def test_bulk_load_runs_an_overridden_model_save(monkeypatch):
    """New rows of a replica whose ``save()`` is overridden go through it, as the default
    ``cqrs_create`` (``Model.objects.create``) does, not through a bulk INSERT."""

    def save(self, *args, **kwargs):
        self.value += 1000
        models.Model.save(self, *args, **kwargs)

    monkeypatch.setattr(CounterReplica, 'save', save)
    line = json.dumps({'id': 1, 'value': 3, 'cqrs_revision': 0, 'cqrs_updated': UPDATED})
    call_command(
        'cqrs_bulk_load', '-i', '-', stdin=io.StringIO(f'counter\n{line}'), stderr=io.StringIO()
    )
    assert CounterReplica.objects.get(id=1).value == 1003
