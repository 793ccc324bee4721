"""Default receivers: the lifecycle signals become the log lines of django-cqrs.

Transports and the consumer only send signals; these receivers write the lines (same words as
the original, as plain strings, on the logger ``django-cqrs``), so every line is written once
and users can attach their own receivers (metrics, tracing) beside them. The words are
:class:`~dj_cqrs.transport.mixins.LoggingMixin`'s: a transport subclass that overrides its
``log_*`` methods (as users of the original did) still gets them called. Set
``CQRS['lifecycle_logging'] = False`` to silence these lines and keep only your receivers.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport.mixins import LoggingMixin

logger = logging.getLogger(LOGGER_NAME)


def _enabled() -> bool:
    return get_settings().lifecycle_logging


def _writer(sender: Any) -> Any:
    """Who writes the line: the sending transport if it has the original's ``LoggingMixin``
    methods (a subclass may override them, as with the original), else the mixin itself."""
    if isinstance(sender, type) and issubclass(sender, LoggingMixin):
        return sender
    return LoggingMixin


def log_published(sender: Any, payload: Any, **kwargs: Any) -> None:
    if _enabled():
        _writer(sender).log_produced(payload)


def log_publish_failed(
    sender: Any, payload: Any, error: BaseException | None = None, **kwargs: Any
) -> None:
    if not _enabled():
        return
    # ``error`` is an exception, or a text where a transport only has a reason.
    exc_info = (
        (type(error), error, error.__traceback__) if isinstance(error, BaseException) else None
    )
    logger.error(
        "CQRS couldn't be published: pk = %s (%s).", payload.pk, payload.cqrs_id, exc_info=exc_info
    )


def _log_info_line(sender: Any, name: str, payload: Any) -> None:
    """Skips the mixin's own INFO line while the logger drops INFO (per message, the consumer's
    hot path); an overriding method is always called."""
    method = getattr(_writer(sender), name)
    if method is not getattr(LoggingMixin, name) or logger.isEnabledFor(logging.INFO):
        method(payload)


def log_received(sender: Any, payload: Any, **kwargs: Any) -> None:
    if _enabled():
        _log_info_line(sender, 'log_consumed', payload)


def log_applied(sender: Any, payload: Any, **kwargs: Any) -> None:
    if _enabled():
        _log_info_line(sender, 'log_consumed_accepted', payload)


def log_failed(sender: Any, payload: Any, **kwargs: Any) -> None:
    if _enabled():
        _writer(sender).log_consumed_failed(payload)


def log_delayed(
    sender: Any, payload: Any, delay: float = 0, eta: Any = None, **kwargs: Any
) -> None:
    if not _enabled():
        return
    if eta is None:
        eta = timezone.now() + timedelta(seconds=delay)
    _writer(sender).log_delayed(payload, delay, eta)


def log_requeued(sender: Any, payload: Any, **kwargs: Any) -> None:
    if _enabled():
        _writer(sender).log_requeued(payload)


def log_dead_lettered(sender: Any, payload: Any, **kwargs: Any) -> None:
    if _enabled():
        _writer(sender).log_dead_letter(payload)


RECEIVERS = (
    (signals.message_published, log_published),
    (signals.message_publish_failed, log_publish_failed),
    (signals.message_received, log_received),
    (signals.message_applied, log_applied),
    (signals.message_failed, log_failed),
    (signals.message_delayed, log_delayed),
    (signals.message_requeued, log_requeued),
    (signals.message_dead_lettered, log_dead_lettered),
)


def connect() -> None:
    """Connect the default log receivers (idempotent; called by ``CQRSConfig.ready()``)."""
    for signal, receiver in RECEIVERS:
        signal.connect(receiver, dispatch_uid='dj_cqrs.observability.logging.' + receiver.__name__)
