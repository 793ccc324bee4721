"""The outbox: messages kept in the master's database until the broker confirmed them.

Settings (``CQRS['master']``): ``CQRS_OUTBOX_MODE`` (``'fallback'`` default, ``'transactional'``,
``'off'``), ``CQRS_OUTBOX_HOLD``, ``CQRS_OUTBOX_GRACE``, ``CQRS_OUTBOX_RETRY_DELAY``; see
``docs/outbox.md``.
"""

from dj_cqrs.outbox.relaying import RelayResult, relay, relay_once, status
from dj_cqrs.outbox.sending import keep, send

__all__ = ['RelayResult', 'keep', 'relay', 'relay_once', 'send', 'status']
