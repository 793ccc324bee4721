"""Hand a payload to the configured transport (public path of django-cqrs 3.1)."""

from __future__ import annotations

from typing import Any


def produce(payload: Any) -> Any:
    """Publish one payload through ``settings.CQRS['transport']``."""
    from dj_cqrs.transport import get_transport

    return get_transport().produce(payload)
