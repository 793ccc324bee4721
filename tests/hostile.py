"""Hostile message bodies (issue 12, B): wrong JSON types, unusable pks and revisions, nesting.

The corpus of bodies that decode as JSON but must never be applied, next to the malformed
bodies of ``integration_tests/test_rabbitmq_bad_messages.py`` (which publishes these too).
Each entry says what must become of it: ``reject`` (not a message: rejected at decode with a
log line) or ``dead_letter`` (a message that can never apply: to the dead letters at once,
never retried). Good messages for ``golden_parent`` pks 1-3 go with them; a bad entry that was
applied would create or change a row (its pks are 1, 2 or >= 900, and its name is ``bad``).
"""

from __future__ import annotations

import json
from typing import Any

UPDATED = '2024-01-01 00:00:00+00:00'
REJECT = 'reject'
DEAD_LETTER = 'dead_letter'
GOOD_PKS = (1, 2, 3)


def message(pk: Any = 900, signal_type: Any = 'SAVE', **changes: Any) -> dict[str, Any]:
    data = {'id': pk, 'name': 'bad', 'cqrs_revision': 1, 'cqrs_updated': UPDATED}
    data.update(changes.pop('data', {}))
    body = {
        'signal_type': signal_type,
        'cqrs_id': 'golden_parent',
        'instance_data': data,
        'previous_data': None,
        'instance_pk': pk,
        'correlation_id': None,
        'retries': 0,
        'expires': '2100-01-01T00:00:00+00:00',
        'meta': None,
    }
    body.update(changes)
    return body


def good(pk: int) -> bytes:
    """A SAVE that must apply: row ``pk`` named ``good<pk>`` at revision 0."""
    body = message(pk, data={'name': f'good{pk}', 'cqrs_revision': 0})
    return json.dumps(body).encode()


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {'a': value}
    return value


def _delete(pk: Any, revision: Any) -> dict[str, Any]:
    return message(
        pk,
        'DELETE',
        instance_data={'id': pk, 'cqrs_revision': revision, 'cqrs_updated': UPDATED},
    )


CASES: list[tuple[str, dict[str, Any], str]] = [
    ('signal_type is a list', message(901, ['SAVE']), REJECT),
    ('signal_type is an object', message(902, {'type': 'SAVE'}), REJECT),
    ('cqrs_id is a list', message(903, cqrs_id=['golden_parent']), REJECT),
    ('instance_data is a string', message(904, instance_data='{}'), REJECT),
    ('previous_data is a list', message(905, previous_data=[1]), REJECT),
    ('correlation_id is an object', message(906, correlation_id={'a': 1}), REJECT),
    ('retries is a fraction', message(907, retries=1.5), REJECT),
    ('100 levels of nesting', message(908, meta=nested(100)), REJECT),
    ('400 levels of nesting', message(909, meta=nested(400)), REJECT),
    ('instance_pk null', message(910, instance_pk=None), DEAD_LETTER),
    ('id null (B2: a phantom row)', message(None, instance_pk=911), DEAD_LETTER),
    ('id null, instance_pk null', message(None), DEAD_LETTER),
    ('revision is text "9"', message(912, data={'cqrs_revision': '9'}), DEAD_LETTER),
    ('revision null', message(913, data={'cqrs_revision': None}), DEAD_LETTER),
    ('revision 4.5', message(914, data={'cqrs_revision': 4.5}), DEAD_LETTER),
    ('revision true', message(915, data={'cqrs_revision': True}), DEAD_LETTER),
    ('revision 2**31 (over the column)', message(916, data={'cqrs_revision': 2**31}), DEAD_LETTER),
    ('revision negative', message(917, data={'cqrs_revision': -1}), DEAD_LETTER),
    ('cqrs_updated is a number', message(918, data={'cqrs_updated': 17}), DEAD_LETTER),
    ('pk 1.5 (would update row 1)', message(1.5), DEAD_LETTER),
    ('pk true (would update row 1)', message(True), DEAD_LETTER),
    ('id 1.5 with instance_pk 1', message(1.5, instance_pk=1), DEAD_LETTER),
    ('id is text for an integer pk', message('abc'), DEAD_LETTER),
    ('id is an object', message({'id': 1}, instance_pk=1), DEAD_LETTER),
    ('DELETE revision "9" (B5)', _delete(2, '9'), DEAD_LETTER),
    ('DELETE revision null (B5)', _delete(2, None), DEAD_LETTER),
    ('DELETE id null', _delete(None, 5), DEAD_LETTER),
    ('DELETE id 1.5 (would delete row 1)', _delete(1.5, 5), DEAD_LETTER),
]
"""``(name, body, expected outcome)``."""

BODIES: list[tuple[str, bytes, str]] = [
    (name, json.dumps(body).encode(), expected) for name, body, expected in CASES
]
"""The same, encoded."""

_BAD_DATA = {
    'id null (B2: a phantom row)',
    'revision is text "9"',
    'revision null',
    'revision 4.5',
    'revision true',
    'revision 2**31 (over the column)',
    'revision negative',
    'cqrs_updated is a number',
    'pk 1.5 (would update row 1)',
    'pk true (would update row 1)',
    'id is text for an integer pk',
    'id is an object',
}
LOAD_LINES: list[tuple[str, dict[str, Any]]] = [
    (name, body['instance_data']) for name, body, _ in CASES if name in _BAD_DATA
]
"""The corpus's bad ``instance_data`` as ``cqrs_bulk_load`` lines (a dump holds only data)."""
