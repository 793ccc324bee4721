"""Publishing a master's message so that it is never lost: publish, or keep it in the outbox.

After a failure this process stops trying the broker for ``CQRS_OUTBOX_HOLD`` seconds and keeps
new messages straight away: during an outage every save would otherwise wait for the
transport's retries.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.utils import timezone

from dj_cqrs import conf, signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.exceptions import PublishError
from dj_cqrs.outbox import store
from dj_cqrs.transport import background, get_transport
from dj_cqrs.transport.background import handed_off
from dj_cqrs.transport.base import waiting_for_confirms

if TYPE_CHECKING:
    from dj_cqrs.dataclasses import TransportPayload

logger = logging.getLogger(LOGGER_NAME)

OUTBOX_OFF = 'off'
OUTBOX_TRANSACTIONAL = 'transactional'


class _Hold:
    """Until when this process keeps new messages without trying the broker; also the
    publishing threads' ``background.FailureSink``."""

    _until = 0.0

    def active(self) -> bool:
        return time.monotonic() < self._until

    def start(self) -> None:
        self._until = time.monotonic() + get_settings().master.outbox_hold

    def clear(self) -> None:
        self._until = 0.0

    release = clear

    def hold(self) -> None:
        if get_settings().master.outbox_mode != OUTBOX_OFF:
            self.start()

    def keep(self, payload: Any, error: PublishError, sender: Any, attempts: int) -> None:
        if get_settings().master.outbox_mode == OUTBOX_OFF:
            _report_lost(payload, error, sender)
        else:
            keep(payload, error, sender=sender, attempts=attempts)


hold = _Hold()
conf.on_reset(hold.clear)
background.set_failure_sink(hold)


class _Backlog:
    """Whether this process kept messages that a relay pass has not sent yet."""

    pending = False


def _held_error(payload: TransportPayload) -> PublishError:
    return PublishError(
        f'CQRS message pk = {payload.pk} ({payload.cqrs_id}) is held in the outbox: the broker '
        'failed recently (CQRS_OUTBOX_HOLD).',
        payload,
    )


def send(payload: TransportPayload, *, using: str | None = None) -> Any:
    """Publish ``payload``; keep it in the outbox if that fails (unless the outbox is off)."""
    transport = get_transport()
    mode = get_settings().master.outbox_mode
    if mode != OUTBOX_OFF and hold.active():
        keep(payload, _held_error(payload), using=using, sender=transport, attempts=0)
        return None
    handed_off()  # forget an earlier call's
    try:
        result = transport.produce(payload)
    except Exception as err:
        if mode == OUTBOX_OFF:
            _report_lost(payload, err, transport)
            return None
        hold.start()
        keep(payload, err, using=using, sender=transport)
        return None
    if _Backlog.pending:
        if handed_off():
            # Queued for a publishing thread: the broker may still be down, and catching up
            # here would make this save wait for it. Catch up beside the save instead.
            _drain_later(using)
        else:
            _drain_some(using)
    return result


_drainer_lock = threading.Lock()
_drainer: threading.Thread | None = None


def _drain_later(using: str | None) -> None:
    """:func:`_drain_some` in a thread of its own (one at a time), not in the saving one."""
    global _drainer
    with _drainer_lock:
        if _drainer is not None and _drainer.is_alive():
            return
        _drainer = threading.Thread(
            target=_drain_in_thread, args=(using,), name='cqrs-outbox-catch-up', daemon=True
        )
        _drainer.start()


def _drain_in_thread(using: str | None) -> None:
    try:
        _drain_some(using)
    except Exception:
        logger.exception('CQRS outbox: catching up after an outage failed.')
    finally:
        connections.close_all()  # this thread's own connections


def _drain_some(using: str | None) -> None:
    """The broker works again: send one batch of what this process kept (oldest first).

    The relay command does the same continuously; this makes a master that runs no relay
    catch up by itself, a batch per successful publish, never inside a transaction.
    """
    alias = store.outbox_db(using)
    if connections[alias].in_atomic_block:
        return
    from dj_cqrs.outbox.relaying import DEFAULT_BATCH, relay_once

    try:
        result = relay_once(batch=DEFAULT_BATCH, using=alias)
    except DatabaseError:
        logger.exception('CQRS outbox: catching up after an outage failed.')
        return
    if not result.failed and result.sent < DEFAULT_BATCH:
        _Backlog.pending = False


def keep(
    payload: TransportPayload,
    error: BaseException | str | None,
    *,
    using: str | None = None,
    sender: Any = None,
    attempts: int = 1,
) -> int | None:
    """Write ``payload`` to the outbox after a failed publish (or a late nack); returns the row
    id. If even the outbox can't be written, the body is logged at ERROR level."""
    try:
        with transaction.atomic(using=store.outbox_db(using)):
            row_id = store.insert(payload, using=using, error=error, attempts=attempts)
    except (DatabaseError, TypeError, ValueError) as keep_error:
        _report_lost(payload, error, sender, keep_error)
        return None
    _Backlog.pending = True
    _report_kept(payload, row_id, error, sender)
    return row_id


def transactional(using: str | None) -> bool:
    """Whether the messages of a change on ``using`` are written in its own transaction.

    (``CQRS_OUTBOX_MODE = 'transactional'`` inside ``transaction.atomic``: :func:`stage` writes
    them, :func:`send_staged` publishes and deletes them after commit; if the process dies first,
    the relay sends them once ``CQRS_OUTBOX_GRACE`` seconds old. Autocommit saves are committed
    before ``post_save`` runs: they are published at once and kept on failure, as in fallback.)
    """
    if get_settings().master.outbox_mode != OUTBOX_TRANSACTIONAL:
        return False
    return connections[using or DEFAULT_DB_ALIAS].in_atomic_block


def stage(payload: TransportPayload, *, using: str, row_id: int | None = None) -> int:
    """Transactional mode: write (or rewrite) the message inside the caller's transaction."""
    if row_id is not None and store.replace_body(row_id, payload, using=using):
        return row_id
    not_before = timezone.now() + datetime.timedelta(seconds=get_settings().master.outbox_grace)
    return store.insert(payload, using=using, not_before=not_before)


def send_staged(payload: TransportPayload, row_id: int, *, using: str) -> bool:
    """Transactional mode, after commit: publish a staged row, then delete it.

    On failure the row stays for the relay (with its try counted). Returns whether it was sent.
    """
    transport = get_transport()
    if hold.active():
        _Backlog.pending = True
        _signal_failed(transport, payload, _held_error(payload), kept=True)
        return False
    try:
        with waiting_for_confirms():  # the row is deleted below: only once confirmed
            transport.produce(payload)
    except Exception as err:
        hold.start()
        _Backlog.pending = True
        try:
            store.mark_failed(row_id, err, using=using)
        except DatabaseError:
            logger.exception('CQRS outbox row %s could not be updated.', row_id)
        _report_kept(payload, row_id, err, transport)
        return False
    if _Backlog.pending:
        _drain_some(using)
    try:
        store.delete([row_id], using=using)
    except DatabaseError:
        # Sent but still in the outbox: the relay will send it again, which replicas ignore
        # (same revision).
        logger.exception(
            'CQRS outbox row %s could not be deleted after publishing: pk = %s (%s).',
            row_id,
            payload.pk,
            payload.cqrs_id,
        )
    return True


def _report_kept(
    payload: TransportPayload, row_id: int, error: BaseException | str | None, sender: Any
) -> None:
    logger.warning(
        'CQRS is kept in the outbox: pk = %s (%s), correlation_id = %s, outbox id = %s, '
        'error = %s.',
        payload.pk,
        payload.cqrs_id,
        payload.correlation_id,
        row_id,
        store.error_text(error) or 'none',
    )
    _signal_failed(sender, payload, error, kept=True)


def _report_lost(
    payload: TransportPayload,
    error: BaseException | str | None,
    sender: Any,
    keep_error: BaseException | None = None,
) -> None:
    try:
        body = payload.encode().decode('ascii')
    except Exception as encode_error:
        body = f'<not encodable: {encode_error}>'
    reason = store.error_text(keep_error) if keep_error is not None else 'the outbox is off'
    logger.error(
        "CQRS couldn't be published and is not kept (%s): pk = %s (%s), correlation_id = %s, "
        'error = %s, body = %s',
        reason,
        payload.pk,
        payload.cqrs_id,
        payload.correlation_id,
        store.error_text(error),
        body,
    )
    _signal_failed(sender, payload, error, kept=False)


def _signal_failed(sender: Any, payload: TransportPayload, error: Any, *, kept: bool) -> None:
    if signals.message_publish_failed.receivers:
        signals.message_publish_failed.send(sender, payload=payload, error=error, kept=kept)
