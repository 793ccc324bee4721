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
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from dj_cqrs import signals
from dj_cqrs.conf import get_settings
from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.transport.mixins import LoggingMixin

logger = logging.getLogger(LOGGER_NAME)


def _writer(sender: Any) -> Any:
    """Who writes the line: the sending transport if it has the original's ``LoggingMixin``
    methods (a subclass may override them, as with the original), else the mixin itself."""
    if isinstance(sender, type) and issubclass(sender, LoggingMixin):
        return sender
    return LoggingMixin


def _forward(name: str, info_line: bool = False) -> Callable[..., None]:
    """A receiver that calls the writer's ``LoggingMixin`` method ``name`` with the payload.

    ``info_line``: skip the mixin's own INFO line while the logger drops INFO (per message, the
    consumer's hot path); an overriding method is always called.
    """

    def receiver(sender: Any, payload: Any, **kwargs: Any) -> None:
        if not get_settings().lifecycle_logging:
            return
        method = getattr(_writer(sender), name)
        default = method is getattr(LoggingMixin, name)
        if not (info_line and default and not logger.isEnabledFor(logging.INFO)):
            method(payload)

    receiver.__name__ = name
    return receiver


def log_publish_failed(
    sender: Any, payload: Any, error: BaseException | None = None, **kwargs: Any
) -> None:
    if not get_settings().lifecycle_logging:
        return
    # ``error`` is an exception, or a text where a transport only has a reason.
    exc_info = (
        (type(error), error, error.__traceback__) if isinstance(error, BaseException) else None
    )
    logger.error(
        "CQRS couldn't be published: pk = %s (%s).", payload.pk, payload.cqrs_id, exc_info=exc_info
    )


def log_delayed(
    sender: Any, payload: Any, delay: float = 0, eta: Any = None, **kwargs: Any
) -> None:
    if not get_settings().lifecycle_logging:
        return
    if eta is None:
        eta = timezone.now() + timedelta(seconds=delay)
    _writer(sender).log_delayed(payload, delay, eta)


RECEIVERS = (
    (signals.message_published, _forward('log_produced')),
    (signals.message_publish_failed, log_publish_failed),
    (signals.message_received, _forward('log_consumed', info_line=True)),
    (signals.message_applied, _forward('log_consumed_accepted', info_line=True)),
    (signals.message_failed, _forward('log_consumed_failed')),
    (signals.message_delayed, log_delayed),
    (signals.message_requeued, _forward('log_requeued')),
    (signals.message_dead_lettered, _forward('log_dead_letter')),
)


def connect() -> None:
    """Connect the default log receivers (idempotent; called by ``CQRSConfig.ready()``)."""
    for signal, receiver in RECEIVERS:
        signal.connect(receiver, dispatch_uid='dj_cqrs.observability.logging.' + receiver.__name__)
