"""The import graph flows one way along the data's path (docs/architecture.md, STYLE.md)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'dj_cqrs'
DOC = PACKAGE.parent / 'docs' / 'architecture.md'

FOLDERS = ('master', 'outbox', 'transport', 'consumer', 'replica', 'observability', 'management')
COMPAT = {'mixins', 'managers', 'metas', 'utils', 'logger', 'controller'}
"""The original's public module paths: thin re-exports, which may import any layer."""
ENTRY = {'apps', 'checks', '_validation', 'admin', 'admin_mixins', '__init__'}
"""Django's entry points (app config, system checks, admin): they wire every layer."""

ALLOWED = {
    'leaf': {'leaf'},
    'transport': {'leaf'},
    'outbox': {'transport', 'leaf'},
    'master': {'outbox', 'leaf'},
    'replica': {'leaf'},
    'observability': {'outbox', 'transport', 'leaf'},
    'consumer': {'observability', 'replica', 'transport', 'leaf'},
    'management': {
        'consumer', 'master', 'observability', 'outbox', 'replica', 'transport', 'leaf'
    },
}
"""Folder -> the folders its modules may import (besides its own). The table of the docs."""

EXCEPTIONS = {
    ('dj_cqrs.signals', 'dj_cqrs.master.signals'):
        "MasterSignals at the original's path, loaded on first use (module __getattr__)",
    ('dj_cqrs.master.publishing', 'dj_cqrs.controller.producer'):
        "the master publishes through the original's producer.produce, which users mock",
    ('dj_cqrs.transport.inprocess', 'dj_cqrs.consumer.handler'):
        'the in-process test transport is broker and worker at once (late import)',
    ('dj_cqrs.transport.inprocess', 'dj_cqrs.consumer.settle'):
        'and settles its messages with the one settle step (late import)',
    ('dj_cqrs.transport.rabbit_consumer', 'dj_cqrs.consumer.loop'):
        "the original's class API RabbitMQTransport.consume() starts the one consumer loop"
        ' with this transport\'s deliveries (late import)',
    ('dj_cqrs.transport.kombu_consumer', 'dj_cqrs.consumer.loop'):
        "KombuTransport.consume() likewise (late import)",
}
"""Deliberate edges against the table, each with its reason."""

PENDING: set[tuple[str, str]] = set()
"""Edges against the table that issue #14 removes (one consumer loop; an injected failure
sink). Listed so that no new one appears; an entry that no longer exists must be deleted."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob('*.py'):
        if 'migrations' in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        found['.'.join(parts)] = path
    return found


MODULES = _modules()


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, 'test', None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING')
        or (isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')
    )


def _walk(node: ast.AST):
    """Every node except the bodies of ``if TYPE_CHECKING:`` (no import at run time)."""
    for child in ast.iter_child_nodes(node):
        if _type_checking_only(child):
            for other in child.orelse:
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def _target(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition('.')[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    names = set()
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[: len(package.split('.')) - node.level + 1]
                base = '.'.join([*anchor, base] if base else anchor)
            names.update(f'{base}.{alias.name}' for alias in node.names)
    targets = {_target(name) for name in names if name.split('.')[0] == 'dj_cqrs'}
    return {target for target in targets if target and target != module}


EDGES = {(module, target) for module, path in MODULES.items() for target in _imports(module, path)}


def group(module: str) -> str:
    """The folder (or kind of top-level module) a module belongs to."""
    parts = module.split('.')
    name = parts[1] if len(parts) > 1 else '__init__'
    if len(parts) > 2 or (len(parts) == 2 and name in FOLDERS):
        return 'compat' if name == 'controller' else name
    if name in COMPAT:
        return 'compat'
    return 'entry' if name in ENTRY else 'leaf'


def _against_the_table() -> set[tuple[str, str]]:
    wrong = set()
    for module, target in EDGES:
        source, dest = group(module), group(target)
        if source == dest or source in ('compat', 'entry'):
            continue
        if dest not in ALLOWED[source]:
            wrong.add((module, target))
    return wrong


def test_every_module_belongs_to_a_folder_of_the_table():
    """Each module's folder has a row in the table (or is a compat/entry module)."""
    assert {group(module) for module in MODULES} <= {*ALLOWED, 'compat', 'entry'}


def test_imports_flow_one_way():
    """No module imports a layer above it except the listed, explained exceptions."""
    wrong = _against_the_table() - set(EXCEPTIONS) - PENDING
    assert not sorted(wrong)


def test_pending_exceptions_still_exist():
    """An edge removed by later work is deleted from PENDING (the list only shrinks)."""
    assert not sorted(PENDING - _against_the_table())
    assert not sorted(set(EXCEPTIONS) - EDGES)


def test_no_import_cycle_across_folders():
    """Folder-to-folder edges (without the listed exceptions) form no cycle."""
    graph = defaultdict(set)
    for module, target in EDGES - set(EXCEPTIONS) - PENDING:
        if group(module) != group(target):
            graph[group(module)].add(group(target))
    done, path = set(), []

    def visit(node: str) -> None:
        assert node not in path, f'import cycle: {" -> ".join([*path, node])}'
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_leaves_import_only_leaves():
    """signals, constants, exceptions, conf, routing... import nothing above them."""
    for module, target in EDGES - set(EXCEPTIONS):
        if group(module) == 'leaf':
            assert group(target) == 'leaf', (module, target)


def test_the_docs_show_the_same_table():
    """docs/architecture.md lists the allowed imports of each folder as ALLOWED does."""
    rows = re.findall(r'^\| `(\w+)` \|[^|]*\| ([^|]*) \|$', DOC.read_text(), re.MULTILINE)
    documented = {name: set(re.findall(r'`(\w+)`', allowed)) for name, allowed in rows}
    assert documented == ALLOWED
