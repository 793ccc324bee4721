"""Hand a payload to the configured transport (public path of django-cqrs 3.1).

Unlike the original, a message the transport cannot publish is not only logged: it is kept in
the outbox (``CQRS['master']['CQRS_OUTBOX_MODE']``, default ``'fallback'``) and sent later by
the relay (``manage.py cqrs_outbox relay``). See :mod:`dj_cqrs.outbox`.
"""

from __future__ import annotations

from typing import Any


def produce(payload: Any) -> Any:
    """Publish one payload through ``settings.CQRS['transport']``; keep it if that fails."""
    from dj_cqrs.outbox.sending import send

    return send(payload)
