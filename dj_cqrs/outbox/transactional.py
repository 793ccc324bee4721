"""``CQRS_OUTBOX_MODE = 'transactional'``: the message is written with the change it describes.

Inside ``transaction.atomic`` a row's message is written (a later save rewrites it) to the
outbox in the same transaction, published and deleted after commit; if that process dies first,
the relay sends it once it is ``CQRS_OUTBOX_GRACE`` seconds old. Autocommit saves are committed
before ``post_save`` runs: they are published at once and kept on failure, as in ``fallback``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db import DEFAULT_DB_ALIAS, connections

from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.outbox import sending, store

if TYPE_CHECKING:
    from dj_cqrs.master.publishing import PendingMessage

logger = logging.getLogger(LOGGER_NAME)


def active(using: str | None) -> bool:
    """Whether messages of a change on ``using`` are written in its transaction."""
    if get_settings().master.outbox_mode != sending.OUTBOX_TRANSACTIONAL:
        return False
    return connections[using or DEFAULT_DB_ALIAS].in_atomic_block


def stage_save(entry: PendingMessage) -> None:
    """Write (or rewrite) the SAVE/SYNC message of a pending entry in the open transaction."""
    if not entry.publish or not active(entry.using):
        return
    try:
        payload = entry.build_payload()
    except Exception:
        # Left to the commit step, which builds it again and logs why it can't.
        logger.debug('CQRS outbox: message of %r not staged.', entry, exc_info=True)
        return
    entry.outbox_id = sending.stage(payload, using=entry.using, row_id=entry.outbox_id)
    entry.staged = payload


def unstage(entry: PendingMessage) -> None:
    """Drop the staged message of an entry whose SAVE no longer has to be sent."""
    if entry.outbox_id is None:
        return
    store.delete([entry.outbox_id], using=entry.using)
    entry.outbox_id = None
    entry.staged = None
