"""Transports, and the one configured in ``settings.CQRS['transport']`` (resolved lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from dj_cqrs import conf
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.inprocess import InProcessTransport
from dj_cqrs.transport.mock import TransportMock

if TYPE_CHECKING:
    from dj_cqrs.transport.kombu import KombuTransport
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

__all__ = [
    'BaseTransport',
    'InProcessTransport',
    'KombuTransport',
    'RabbitMQTransport',
    'TransportMock',
    'get_transport',
]

_resolved: type[BaseTransport] | None = None


def get_transport() -> type[BaseTransport]:
    """The transport class named by ``settings.CQRS['transport']``."""
    global _resolved
    settings = conf.get_settings()  # first: a CQRS changed in place resets _resolved
    transport = _resolved  # read once: a reset may clear it meanwhile
    if transport is None:  # unlocked: threads racing here resolve the same class
        transport = _resolved = resolve(settings.transport)
    return transport


def resolve(path: str | None) -> type[BaseTransport]:
    if not path:
        raise ConfigurationError("settings.CQRS['transport'] is not set.")
    try:
        transport = import_string(path)
    except ImportError as err:
        raise ConfigurationError(
            f"settings.CQRS['transport'] = {path!r} cannot be imported: {err}"
        ) from err
    if not isinstance(transport, type) or not issubclass(transport, BaseTransport):
        raise ConfigurationError(
            f"settings.CQRS['transport'] = {path!r} must be a subclass of "
            'dj_cqrs.transport.BaseTransport.'
        )
    return transport


@conf.on_reset
def _forget() -> None:
    global _resolved
    _resolved = None


def __getattr__(name: str) -> Any:
    if name == 'RabbitMQTransport':
        from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

        return RabbitMQTransport
    if name == 'KombuTransport':
        from dj_cqrs.transport.kombu import KombuTransport

        return KombuTransport
    if name == 'current_transport':
        try:
            return get_transport()
        except ConfigurationError:
            return None
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
