"""A value set on a ``threading.local`` for the duration of a ``with`` block."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_value(local: threading.local, name: str, value: object) -> Iterator[None]:
    """Set ``local.<name>`` to ``value`` in this block (nested blocks restore the outer one)."""
    previous = getattr(local, name, None)
    setattr(local, name, value)
    try:
        yield
    finally:
        setattr(local, name, previous)
