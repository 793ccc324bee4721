"""A master model's hooks are called wherever the original called them, with its arguments.

Each test overrides a hook as a user would (a method on the model class) and goes through a
public entry point: saves, the ``cqrs`` manager's bulk methods, ``cqrs_sync()``, the
``cqrs_sync`` and ``cqrs_bulk_dump`` commands, the admin action, the transactional outbox.
"""

from __future__ import annotations

import io
import json

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.db import transaction
from django.db.models.signals import post_init
from django.test import RequestFactory, override_settings

from dj_cqrs.admin import CQRSAdminMasterSyncMixin
from dj_cqrs.master.mixin import RawMasterMixin
from dj_cqrs.transport import InProcessTransport
from tests.dj_master.models import Counter, GoldenParent, GoldenSerialized

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def to_cqrs_dict_override(monkeypatch):
    """Counter gets a ``to_cqrs_dict`` that adds a key; returns the (using, sync) of each call."""
    calls = []

    def to_cqrs_dict(self, using=None, sync=False):
        calls.append((using, sync))
        data = RawMasterMixin.to_cqrs_dict(self, using=using, sync=sync)
        data['label'] = f'value {self.value}'
        return data

    monkeypatch.setattr(Counter, 'to_cqrs_dict', to_cqrs_dict)
    return calls


def counter_bodies(published):
    return [body for _, body in published() if body['cqrs_id'] == 'counter']


class CounterAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):
    def message_user(self, request, message, *args, **kwargs):
        self.last_message = message


def _save(obj):
    obj.value = 2
    obj.save()


def _bulk_create(obj):
    Counter.cqrs.bulk_create([Counter(id=obj.pk + 1, value=2)])


def _bulk_update(obj):
    Counter.cqrs.bulk_update(Counter.objects.filter(pk=obj.pk), value=2)


def _cqrs_sync(obj):
    obj.cqrs_sync()


def _sync_command(obj):
    call_command('cqrs_sync', '--cqrs-id', 'counter', '-f', '{}', stdout=io.StringIO())


def _admin_action(obj):
    CounterAdmin(Counter, admin.site).sync_items(
        RequestFactory().post('/'), Counter.objects.all()
    )


def _transactional_outbox(obj):
    from django.conf import settings

    cqrs = {**settings.CQRS}
    cqrs['master'] = {**cqrs['master'], 'CQRS_OUTBOX_MODE': 'transactional'}
    with override_settings(CQRS=cqrs), transaction.atomic():
        obj.value = 2
        obj.save()


@pytest.mark.parametrize(
    ('entry_point', 'sync'),
    [
        (_save, False),
        (_bulk_create, False),
        (_bulk_update, False),
        (_cqrs_sync, True),
        (_sync_command, True),
        (_admin_action, True),
        (_transactional_outbox, False),
    ],
    ids=lambda v: getattr(v, '__name__', str(v)).strip('_'),
)
def test_overridden_to_cqrs_dict_builds_every_published_message(
    entry_point, sync, to_cqrs_dict_override, published
):
    """Every way of publishing sends what the model's own ``to_cqrs_dict`` returns."""
    obj = Counter.objects.create(id=1, value=1)
    assert counter_bodies(published)[-1]['instance_data']['label'] == 'value 1'
    to_cqrs_dict_override.clear()
    entry_point(obj)
    body = counter_bodies(published)[-1]
    assert body['instance_data']['label'] == ('value 1' if sync else 'value 2')
    assert body['signal_type'] == ('SYNC' if sync else 'SAVE')
    # The original's call: ``to_cqrs_dict(using, sync=sync)`` with the written database.
    assert to_cqrs_dict_override[-1] == ('default', sync)


def test_overridden_to_cqrs_dict_builds_every_dumped_line(to_cqrs_dict_override):
    """``cqrs_bulk_dump`` writes the model's own ``to_cqrs_dict()`` of each row."""
    for pk in (1, 2):
        Counter.objects.create(id=pk, value=pk)
    to_cqrs_dict_override.clear()
    out = io.StringIO()
    call_command('cqrs_bulk_dump', '-c', 'counter', '-o', '-', stdout=out, stderr=io.StringIO())
    head, *lines = out.getvalue().split('\n')
    assert [json.loads(line)['label'] for line in lines] == ['value 1', 'value 2']
    # The original's call in the dump: ``to_cqrs_dict()``, without arguments.
    assert to_cqrs_dict_override == [(None, False), (None, False)]


def test_dump_of_a_serializer_model_with_an_override_reads_no_row_twice(
    monkeypatch, django_assert_max_num_queries
):
    """An override calling ``super()`` on a serializer model is served from the dump's batch."""
    GoldenParent.objects.create(id=1, name='P')
    for n in range(20):
        GoldenSerialized.objects.create(
            name=f's{n}', price=1, happened='2024-01-01T00:00:00Z', parent_id=1
        )

    def to_cqrs_dict(self, using=None, sync=False):
        return {**RawMasterMixin.to_cqrs_dict(self, using, sync=sync), 'extra': self.parent.name}

    monkeypatch.setattr(GoldenSerialized, 'to_cqrs_dict', to_cqrs_dict)
    out = io.StringIO()
    with django_assert_max_num_queries(6):
        call_command(
            'cqrs_bulk_dump', '-c', 'golden_serialized', '-o', '-', '-b', '10',
            stdout=out, stderr=io.StringIO(),
        )
    lines = [json.loads(line) for line in out.getvalue().split('\n')[1:]]
    assert len(lines) == 20
    assert {(line['extra'], line['parent_name']) for line in lines} == {('P', 'P')}


def test_dump_reads_rows_through_an_overridden_relate_cqrs_serialization(monkeypatch):
    """As the original, the dump reads ``relate_cqrs_serialization(queryset)``: rows that the
    model's override filters out are not dumped (plain models too)."""
    for pk in (1, 2, 3):
        Counter.objects.create(id=pk, value=pk)
    monkeypatch.setattr(
        Counter,
        'relate_cqrs_serialization',
        classmethod(lambda cls, queryset: queryset.filter(value__gte=2)),
    )
    built = []
    post_init.connect(
        lambda sender, instance, **kw: built.append(instance), Counter, weak=False,
        dispatch_uid='dump-built',
    )
    out = io.StringIO()
    err = io.StringIO()
    try:
        call_command('cqrs_bulk_dump', '-c', 'counter', '-o', '-', stdout=out, stderr=err)
    finally:
        post_init.disconnect(sender=Counter, dispatch_uid='dump-built')
    assert [json.loads(line)['id'] for line in out.getvalue().split('\n')[1:]] == [2, 3]
    assert '2 instance(s) saved.' in err.getvalue()
    assert built == []  # still the column copy: no model instance per row


# --------------------------------------------------------------------------------------------
# The other master hooks, each through the entry points that call it


def _meta_hook(monkeypatch, published):
    monkeypatch.setattr(
        Counter, 'get_cqrs_meta', lambda self, **kwargs: {'keys': sorted(kwargs)}
    )
    obj = Counter.objects.create(id=1, value=1)
    obj.cqrs_sync()
    obj.delete()
    metas = [(b['signal_type'], b['meta']) for b in counter_bodies(published)]
    assert metas == [
        ('SAVE', {'keys': ['instance_data', 'previous_data', 'signal_type']}),
        ('SYNC', {'keys': ['instance_data', 'previous_data', 'signal_type']}),
        ('DELETE', {'keys': ['instance_data', 'signal_type']}),
    ]


def _custom_delete_data_hook(monkeypatch, published):
    monkeypatch.setattr(Counter, 'get_custom_cqrs_delete_data', lambda self: {'v': self.value})
    Counter.objects.create(id=1, value=7).delete()
    assert counter_bodies(published)[-1]['instance_data']['custom'] == {'v': 7}


def _is_sync_instance_hook(monkeypatch, published):
    monkeypatch.setattr(Counter, 'is_sync_instance', lambda self: self.value > 1)
    small = Counter.objects.create(id=1, value=1)
    Counter.objects.create(id=2, value=2)
    Counter.cqrs.bulk_create([Counter(id=3, value=0), Counter(id=4, value=4)])
    assert small.cqrs_sync() is False
    small.delete()
    assert [b['instance_pk'] for b in counter_bodies(published)] == [2, 4]


def _relate_hook(monkeypatch, published):
    calls = []

    def relate(cls, queryset):
        calls.append(cls)
        return queryset.select_related('parent')

    monkeypatch.setattr(GoldenSerialized, 'relate_cqrs_serialization', classmethod(relate))
    GoldenParent.objects.create(id=1, name='P')
    GoldenSerialized.objects.create(name='s', price=1, happened='2024-01-01T00:00:00Z', parent_id=1)
    call_command('cqrs_sync', '--cqrs-id', 'golden_serialized', '-f', '{}', stdout=io.StringIO())
    call_command(
        'cqrs_bulk_dump', '-c', 'golden_serialized', '-o', '-',
        stdout=io.StringIO(), stderr=io.StringIO(),
    )
    # The save's re-read of the row, the sync command's batches and the dump's batches.
    assert calls == [GoldenSerialized] * 3


def _sync_queryset_hook(monkeypatch, published):
    for pk in (1, 2):
        Counter.objects.create(id=pk, value=pk)
    InProcessTransport.reset()
    monkeypatch.setattr(
        CounterAdmin, '_cqrs_sync_queryset', lambda self, qs: qs.filter(value=2)
    )
    CounterAdmin(Counter, admin.site).sync_items(
        RequestFactory().post('/'), Counter.objects.all()
    )
    assert [b['instance_pk'] for b in counter_bodies(published)] == [2]


@pytest.mark.parametrize(
    'check',
    [_meta_hook, _custom_delete_data_hook, _is_sync_instance_hook, _relate_hook,
     _sync_queryset_hook],
    ids=lambda f: f.__name__.strip('_'),
)
def test_master_hook_overrides_are_called(check, monkeypatch, published):
    """``get_cqrs_meta``, ``get_custom_cqrs_delete_data``, ``is_sync_instance``,
    ``relate_cqrs_serialization`` and the admin's ``_cqrs_sync_queryset`` are the model's."""
    check(monkeypatch, published)
