"""Every code example of README.md, docs/*.md and the examples' READMEs runs or is checked.

- ``python`` blocks of a page run in order in one namespace (a page reads like a script), with
  their models created in an isolated app registry: model declarations must pass the
  library's declaration checks, and a master model and a replica model with the same
  CQRS_ID on one page are saved, updated and deleted through the in-process transport.
  ``test_*`` functions a page defines are called.
- ``python`` blocks that define ``CQRS = {...}`` must pass the library's system checks.
- ``bash`` lines that run a ``manage.py cqrs_*`` command must parse with that command's real
  argument parser.
- ``json`` blocks must decode as a message.

The shell commands of README.md's first block are run by ``tests/test_demo.py`` (the demo)
and by CI itself (``.ci/test.sh``).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys
import types
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, models, transaction
from django.db.models import signals as model_signals
from django.dispatch import Signal
from django.test.utils import isolate_apps, override_settings

from dj_cqrs import checks, conf
from dj_cqrs import signals as cqrs_signals
from dj_cqrs.controller.consumer import consume
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.mixins import MasterMixin, RawMasterMixin, RawReplicaMixin, ReplicaMixin
from dj_cqrs.registries import MasterRegistry, ReplicaRegistry
from dj_cqrs.transport import InProcessTransport

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    ROOT / 'README.md',
    *sorted((ROOT / 'docs').glob('*.md')),
    *sorted((ROOT / 'examples').glob('**/README.md')),
]
FENCE = re.compile(r'^```(\w*)[^\n]*\n(.*?)^```', re.M | re.S)
MODULE = 'tests.dj_master.docs_examples'  # models get app label dj_master, isolated registry


def blocks(page: Path, *languages: str) -> list[tuple[int, str]]:
    """(line number, code) of the fenced blocks of ``page`` in one of ``languages``."""
    text = page.read_text(encoding='utf-8')
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) in languages:
            found.append((text.count('\n', 0, match.start()) + 1, match.group(2)))
    return found


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def is_settings(code: str) -> bool:
    return bool(re.search(r'^CQRS = \{', code, re.M))


def python_pages() -> list[Path]:
    return [p for p in PAGES if any(not is_settings(c) for _, c in blocks(p, 'python'))]


def settings_blocks() -> list[Any]:
    return [
        pytest.param(code, id=f'{page_id(page)}:{line}')
        for page in PAGES
        for line, code in blocks(page, 'python')
        if is_settings(code)
    ]


def manage_lines() -> list[Any]:
    params = []
    for page in PAGES:
        for line, code in blocks(page, 'bash'):
            text = code.replace('\\\n', ' ')
            for command in re.split(r'\n|\|', text):
                command = command.split('#', 1)[0].strip()
                if re.match(r'(\.\./)*(\S*python\S* )?manage\.py cqrs_', command) or re.match(
                    r'python manage\.py cqrs_', command
                ):
                    params.append(pytest.param(command, id=f'{page_id(page)}:{line}:{command}'))
    return params


@contextlib.contextmanager
def scratch_registries() -> Iterator[None]:
    """Empty CQRS registries and untouched signal receivers around the examples."""
    saved = {r: dict(r.models) for r in (MasterRegistry, ReplicaRegistry)}
    all_signals = [s for s in vars(cqrs_signals).values() if isinstance(s, Signal)] + [
        s for s in vars(model_signals).values() if isinstance(s, Signal)
    ]
    receivers = {s: list(s.receivers) for s in all_signals}
    for registry in saved:
        registry.models.clear()
    try:
        yield
    finally:
        for registry, models_ in saved.items():
            registry.models.clear()
            registry.models.update(models_)
        for sig, kept in receivers.items():
            with sig.lock:
                sig.receivers[:] = kept
                sig.sender_receivers_cache.clear()
                sig._dead_receivers = False


def run_page(page: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {'__name__': MODULE, 'INSTALLED_APPS': []}
    for line, code in blocks(page, 'python'):
        if is_settings(code):
            continue
        try:
            exec(compile(code, f'{page_id(page)}:{line}', 'exec'), namespace)
        except Exception as err:
            raise AssertionError(f'{page_id(page)} line {line}: {err!r}') from err
    return namespace


def cqrs_classes(namespace: dict[str, Any]) -> list[type]:
    return [
        v
        for v in namespace.values()
        if isinstance(v, type)
        and issubclass(v, (RawMasterMixin, ReplicaMixin, RawReplicaMixin))
        and v.__module__ == MODULE
        and getattr(v, 'CQRS_ID', None)
    ]


@contextlib.contextmanager
def tables(model_classes: list[type]) -> Iterator[None]:
    """The tables of the example models, under a prefix so they never meet the test apps'."""
    concrete = [m for m in model_classes if issubclass(m, models.Model) and not m._meta.abstract]
    for model in concrete:
        model._meta.db_table = f'docs_{model._meta.db_table}'
    with connection.schema_editor() as editor:
        for model in concrete:
            editor.create_model(model)
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            for model in reversed(concrete):
                editor.delete_model(model)


def value_for(field: models.Field, n: int) -> Any:
    if isinstance(field, models.DecimalField):
        from decimal import Decimal

        return Decimal(f'{n}.50')
    if isinstance(field, (models.IntegerField, models.FloatField)):
        return n
    if isinstance(field, models.BooleanField):
        return True
    return f'value {n}'


@pytest.mark.parametrize('page', python_pages(), ids=page_id)
@pytest.mark.django_db(transaction=True)
def test_page_examples_run(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's Python examples run; its models register; master/replica pairs replicate."""
    with scratch_registries(), isolate_apps('tests.dj_master'):
        namespace = run_page(page)
        classes = cqrs_classes(namespace)
        for cls in classes:
            registry = MasterRegistry if issubclass(cls, RawMasterMixin) else ReplicaRegistry
            assert registry.models.get(cls.CQRS_ID) is cls, f'{cls.__name__} is not registered'
        pairs = [
            (m, ReplicaRegistry.models[m.CQRS_ID])
            for m in classes
            if issubclass(m, MasterMixin) and m.CQRS_ID in ReplicaRegistry.models
        ]
        tests = [f for name, f in namespace.items() if name.startswith('test_') and callable(f)]
        page_check = PAGE_CHECKS.get(page_id(page))
        if not pairs and not tests and not page_check:
            return
        with tables(classes):
            for master, replica in pairs:
                check_replication(master, replica)
            for test in tests:
                InProcessTransport.reset()
                test()
            if page_check:
                InProcessTransport.reset()
                page_check(namespace, monkeypatch)


def check_replication(master: type, replica: type) -> None:
    """Create, update and delete a master row; the replica row follows."""
    fields = [
        f
        for f in master._meta.concrete_fields
        if not f.primary_key and f.name not in ('cqrs_revision', 'cqrs_updated')
    ]
    with transaction.atomic():
        row = master.objects.create(**{f.name: value_for(f, 1) for f in fields})
    copy = replica.objects.get(pk=row.pk)
    assert copy.cqrs_revision == 0
    for f in fields:
        if hasattr(copy, f.name):
            assert getattr(copy, f.name) == value_for(f, 1), f.name
    for f in fields:
        setattr(row, f.name, value_for(f, 2))
    with transaction.atomic():
        row.save()
    copy = replica.objects.get(pk=row.pk)
    assert copy.cqrs_revision == 1
    for f in fields:
        if hasattr(copy, f.name):
            assert getattr(copy, f.name) == value_for(f, 2), f.name
    with transaction.atomic():
        row.delete()
    assert not replica.objects.filter(pk=row.pk).exists()


# --- pages whose examples are functions: call them and check what they did -------------------


def published() -> list[tuple[str, dict]]:
    return [(d.routing_key, json.loads(d.body)) for d in InProcessTransport.published]


def check_master_models(ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """CQRS_FIELDS, tracked fields, bulk_update + cqrs_sync(queue), serializer, hooks, raw mixin."""
    InProcessTransport.apply = False  # record only: this page has no replicas
    serializers = types.ModuleType('myapp.serializers')
    serializers.TitleSerializer = ns['TitleSerializer']
    monkeypatch.setitem(sys.modules, 'myapp', types.ModuleType('myapp'))
    monkeypatch.setitem(sys.modules, 'myapp.serializers', serializers)
    with transaction.atomic():
        publisher = ns['Publisher'].objects.create(name='Gollancz', country='GB')
        title = ns['Title'].objects.create(name='Dune', price=Decimal('9.99'), publisher=publisher)
    (_, pub), (_, first) = published()
    assert set(pub['instance_data']) == {'id', 'name', 'cqrs_revision', 'cqrs_updated'}
    assert first['instance_data']['publisher'] == publisher.pk
    InProcessTransport.reset()
    ns['reprice'](publisher, 2)
    (key, saved), (sync_key, sync) = published()
    assert (key, saved['signal_type'], saved['instance_data']['cqrs_revision']) == (
        'title',
        'SAVE',
        1,
    )
    assert Decimal(str(saved['instance_data']['price'])) == Decimal('19.98')
    assert Decimal(str(saved['previous_data']['price'])) == Decimal('9.99')
    assert (sync_key, sync['signal_type']) == ('cqrs.search_service.title', 'SYNC')
    InProcessTransport.reset()
    with transaction.atomic():
        edition = ns['Edition'].objects.create(name='First', publisher=publisher)
    ns['rename_all']({edition.pk: 'Second'})
    bodies = [b for _, b in published()]
    assert [b['instance_data']['name'] for b in bodies] == ['First', 'Second']
    assert bodies[-1]['instance_data']['publisher_name'] == 'Gollancz'
    InProcessTransport.reset()
    with transaction.atomic():
        article = ns['Article'].objects.create(title='Draft')
    assert published() == []  # is_sync_instance() is False for drafts
    article.published = True
    with transaction.atomic():
        article.save()
    with transaction.atomic():
        article.delete()
    (_, save), (_, delete) = published()
    assert save['meta'] == {'origin': 'cms', 'signal': 'SAVE'}
    assert delete['signal_type'] == 'DELETE'
    assert delete['instance_data']['custom'] == {'title': 'Draft'}
    InProcessTransport.reset()
    with transaction.atomic():
        ns['Node'].objects.create(name='root')
    assert [key for key, _ in published()] == ['node']
    assert title.pk


def message(cqrs_id: str, data: dict, signal: str = 'SAVE', **kwargs: Any) -> TransportPayload:
    data = {'cqrs_updated': '2024-01-01 00:00:00+00:00', **data}
    return TransportPayload(signal, cqrs_id, data, data.get('id'), **kwargs)


def check_replica_models(ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Default replica with a raw FK id, mapping, custom serialization, tracked fields, cache."""
    from django.core.cache import cache

    assert consume(message('publisher', {'id': 3, 'name': 'Tor', 'cqrs_revision': 0}))
    assert consume(
        message(
            'title',
            {'id': 1, 'name': 'Dune', 'price': '9.99', 'publisher': 3, 'cqrs_revision': 0},
        )
    )
    assert ns['TitleReplica'].objects.get(pk=1).publisher.name == 'Tor'
    assert consume(
        message('title_card', {'id': 1, 'name': 'Dune', 'price': '9.99', 'cqrs_revision': 0})
    )
    card = ns['TitleCard'].objects.get(pk=1)
    assert (card.heading, card.amount) == ('Dune', Decimal('9.99'))
    for revision, price in enumerate(['9.99', '7.49']):
        data = {'id': 1, 'name': 'Dune', 'price': price, 'cqrs_revision': revision}
        assert consume(message('title_summary', data))
    assert ns['TitleSummary'].objects.get(pk=1).label == 'Dune (7.49)'
    assert consume(message('priced_title', {'id': 1, 'price': '9.99', 'cqrs_revision': 0}))
    assert consume(
        message(
            'priced_title',
            {'id': 1, 'price': '7.49', 'cqrs_revision': 1},
            previous_data={'price': '9.99'},
        )
    )
    assert ns['PricedTitle'].objects.get(pk=1).previous_price == Decimal('9.99')
    assert ns['PricedTitle'].get_cqrs_retry_delay(3) == 8
    assert consume(message('title_cache', {'id': 5, 'name': 'Hyperion', 'cqrs_revision': 0}))
    assert cache.get('title:5') == 'Hyperion'
    assert consume(message('title_cache', {'id': 5, 'cqrs_revision': 1}, signal='DELETE'))
    assert cache.get('title:5') is None


def check_utilities(ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """``replay`` applies a row straight to a replica model (taken from the replica page)."""
    replica_ns = run_page(ROOT / 'docs' / 'replica-models.md')
    with tables(cqrs_classes(replica_ns)):
        data = {'id': 9, 'name': 'Ubik', 'price': '3.00', 'cqrs_revision': 4}
        data['cqrs_updated'] = '2024-01-01 00:00:00+00:00'
        assert ns['replay']('title_card', data)
        assert replica_ns['TitleCard'].objects.get(pk=9).heading == 'Ubik'


def check_lifecycle(ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented receivers get the lifecycle signals."""
    payload = message('book', {'id': 1, 'cqrs_revision': 0})
    cqrs_signals.message_applied.send(InProcessTransport, payload=payload, duration=0.1, lag=0.5)
    assert ns['LAGS'] == [('book', 0.5)]
    printed = []
    monkeypatch.setitem(ns, 'print', printed.append)
    cqrs_signals.message_dead_lettered.send(InProcessTransport, payload=payload, reason='expired')
    assert printed == ['dead letter: book pk=1: expired']


def check_admin(ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync action is added to the admin's own actions and re-sends the selected rows."""
    from django.contrib.admin import AdminSite
    from django.test import RequestFactory

    with transaction.atomic():
        shelf = ns['Shelf'].objects.create(label='A1', room='hall')
    InProcessTransport.reset()
    InProcessTransport.apply = False
    model_admin = ns['ShelfAdmin'](ns['Shelf'], AdminSite())
    request = RequestFactory().get('/')
    request.user = types.SimpleNamespace(has_perm=lambda *args: True)
    assert {'mark_moved', 'sync_items'} <= set(model_admin.get_actions(request))
    said = []
    model_admin.message_user = lambda request, text, *args, **kwargs: said.append(text)
    model_admin.sync_items(request, ns['Shelf'].objects.all())
    assert said == ['1 successfully synced. 0 failed: []']
    assert [(k, b['signal_type']) for k, b in published()] == [('shelf', 'SYNC')]
    model_admin.mark_moved(request, ns['Shelf'].objects.all())
    shelf.refresh_from_db()
    assert (shelf.room, shelf.cqrs_revision) == ('moved', 1)


def check_outbox(ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """``drain_outbox`` runs the relay over an empty outbox and reads its status."""
    sent, status = ns['drain_outbox']()
    assert sent == 0
    assert isinstance(status, dict)


def check_transports(ns: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented custom transport publishes through ``produce``."""
    printed = []
    monkeypatch.setitem(ns, 'print', lambda *args: printed.append(args))
    assert ns['PrintingTransport'].produce(message('book', {'id': 1, 'cqrs_revision': 0}))
    assert printed[0][0] == 'book'
    assert json.loads(printed[0][1])['cqrs_id'] == 'book'


PAGE_CHECKS = {
    'docs/master-models.md': check_master_models,
    'docs/replica-models.md': check_replica_models,
    'docs/utilities.md': check_utilities,
    'docs/lifecycle.md': check_lifecycle,
    'docs/admin.md': check_admin,
    'docs/outbox.md': check_outbox,
    'docs/transports.md': check_transports,
}


def test_example_pairs_are_exercised() -> None:
    """The pages this file replicates through really define master/replica pairs (self-check)."""
    with scratch_registries(), isolate_apps('tests.dj_master'):
        for name in ('README.md', 'docs/getting-started.md'):
            namespace = run_page(ROOT / name)
            masters = {c.CQRS_ID for c in cqrs_classes(namespace) if issubclass(c, MasterMixin)}
            replicas = {
                c.CQRS_ID for c in cqrs_classes(namespace) if not issubclass(c, MasterMixin)
            }
            assert masters & replicas, name


@pytest.mark.parametrize('code', settings_blocks())
def test_settings_examples_pass_the_system_checks(code: str) -> None:
    """Every ``CQRS = {...}`` example parses and passes the library's system checks."""
    namespace: dict[str, Any] = {'INSTALLED_APPS': []}
    exec(code, namespace)
    cqrs = namespace['CQRS']
    conf.parse(cqrs)
    replica_example = 'queue' in cqrs
    saved = dict(ReplicaRegistry.models)
    try:
        if not replica_example:  # a master-only service has no replica models
            ReplicaRegistry.models.clear()
        with override_settings(CQRS=cqrs):
            problems = checks.check_settings()
    finally:
        ReplicaRegistry.models.update(saved)
    assert problems == []


@pytest.mark.parametrize('command', manage_lines())
def test_documented_commands_parse(command: str) -> None:
    """Each documented ``manage.py cqrs_*`` line is accepted by that command's parser."""
    from django.core.management import load_command_class

    args = shlex.split(command)
    index = next(i for i, a in enumerate(args) if a.endswith('manage.py'))
    name, rest = args[index + 1], args[index + 2 :]
    parser = load_command_class('dj_cqrs', name).create_parser('manage.py', name)
    parser.parse_args(rest)


def test_documented_commands_are_found() -> None:
    """The command-line examples above are really collected (self-check)."""
    commands = [p.values[0] for p in manage_lines()]
    names = {shlex.split(c)[2] for c in commands if c.startswith('python manage.py')}
    assert {'cqrs_consume', 'cqrs_sync', 'cqrs_bulk_dump', 'cqrs_diff_sync'} <= names
    assert len(commands) >= 20


@pytest.mark.parametrize(
    'body',
    [
        pytest.param(code, id=f'{page_id(p)}:{line}')
        for p in PAGES
        for line, code in blocks(p, 'json')
    ],
)
def test_json_examples_are_messages(body: str) -> None:
    """A documented message body decodes, with the documented keys."""
    payload = TransportPayload.decode(body.strip().encode())
    assert payload.cqrs_id and payload.signal_type in ('SAVE', 'DELETE', 'SYNC')
