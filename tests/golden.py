"""Access to the golden data captured from django-cqrs 3.1 (../shared/spec/golden)."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

CANDIDATES = [
    os.environ.get('CQRS_GOLDEN_DIR', ''),
    str(Path(__file__).resolve().parents[2] / 'shared' / 'spec' / 'golden'),
    '/work/shared/spec/golden',
]


def golden_dir() -> Path:
    for candidate in CANDIDATES:
        if candidate and (Path(candidate) / 'README.md').exists():
            return Path(candidate)
    pytest.skip('golden data (../shared/spec/golden) not found; set CQRS_GOLDEN_DIR')


def load(relative: str) -> Any:
    return json.loads((golden_dir() / relative).read_text(encoding='utf-8'))


def message_files() -> list[Path]:
    return sorted((golden_dir() / 'messages').glob('*.json'))


def messages(name: str) -> list[dict[str, Any]]:
    return load(f'messages/{name}.json')['messages']


def body(message: dict[str, Any]) -> bytes:
    return base64.b64decode(message['body_b64'])


CAPTURE_TIME = datetime.datetime(2026, 11, 26, 15, 0, tzinfo=datetime.timezone.utc)
"""A moment after the capture and before any golden message expired."""


def python_value(value: Any) -> Any:
    """Golden rows show datetimes, Decimals and UUIDs as their repr: turn them back."""
    if isinstance(value, str) and value.startswith(('datetime.', 'Decimal(', 'UUID(')):
        namespace = {'datetime': datetime, 'Decimal': decimal.Decimal, 'UUID': uuid.UUID}
        return eval(value, {'__builtins__': {}}, namespace)  # noqa: S307 - trusted fixture data
    return value
