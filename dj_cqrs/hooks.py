"""Whether a model keeps one of the library's hooks, so that a fast path may replace it.

Fast paths (bulk dump and load, batched apply) skip the model's hooks only when the hook is the
library's own: anything else under that name (an override, a mock, a wrapped function) is the
user's code and must be called as the original would call it.
"""

from __future__ import annotations

from typing import Any


def function_of(attribute: Any) -> Any:
    """What identifies a hook: the function itself (of a bound method, what it wraps)."""
    # A classmethod read from a class is a bound method: compare the function it wraps.
    # Mocks raise AttributeError for ``__func__`` (a "magic" name), so they compare as is.
    return getattr(attribute, '__func__', attribute)


def is_default(model: Any, name: str, base: type) -> bool:
    """Whether ``model.<name>`` is ``base.<name>`` itself, read as the library calls it.

    Not cached per model: a test suite may patch a hook at any time, and it must be called.
    """
    return function_of(getattr(model, name, None)) is function_of(getattr(base, name))
