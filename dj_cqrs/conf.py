"""``settings.CQRS`` parsed once into a typed, read-only object.

The user's dict is never modified: defaults are applied on a copy. The parsed object is cached
and dropped when tests change ``CQRS`` with ``override_settings`` (Django's ``setting_changed``)
or change the dict in place (see :func:`get_settings`).
Structural problems are reported by system checks (``dj_cqrs.checks``); at run time a value that
cannot be used raises :class:`dj_cqrs.exceptions.ConfigurationError` naming the key.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from dj_cqrs import constants
from dj_cqrs.exceptions import ConfigurationError

logger = logging.getLogger(constants.LOGGER_NAME)

_UNSET = object()


@dataclass(frozen=True)
class MasterSettings:
    """``CQRS['master']`` with defaults applied."""

    auto_update_fields: bool = constants.DEFAULT_MASTER_AUTO_UPDATE_FIELDS
    message_ttl: int | None = constants.DEFAULT_MASTER_MESSAGE_TTL
    correlation_function: Callable[..., Any] | None = None
    meta_function: Callable[..., Any] | None = None
    publish_retries: int = constants.DEFAULT_PUBLISH_RETRIES
    outbox_mode: str = 'fallback'
    outbox_hold: float = constants.DEFAULT_OUTBOX_HOLD
    outbox_grace: float = constants.DEFAULT_OUTBOX_GRACE
    outbox_retry_delay: float = constants.DEFAULT_OUTBOX_RETRY_DELAY
    publish_confirms: str = 'async'
    """``CQRS_PUBLISH_CONFIRMS``: 'sync' waits in produce(); 'async' collects in a thread."""
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaSettings:
    """``CQRS['replica']`` with defaults applied."""

    max_retries: int | None = constants.DEFAULT_REPLICA_MAX_RETRIES
    retry_delay: int = constants.DEFAULT_REPLICA_RETRY_DELAY
    delay_queue_max_size: int | None = constants.DEFAULT_REPLICA_DELAY_QUEUE_MAX_SIZE
    dead_letter_queue: str | None = None
    dead_message_ttl: int | None = constants.DEFAULT_DEAD_MESSAGE_TTL
    query_timeout: int = 0
    log_timed_out_queries: bool = False
    query_logger: str = constants.LOGGER_NAME
    batch_size: int = constants.DEFAULT_REPLICA_BATCH_SIZE
    batch_apply: bool = True
    """``CQRS_BATCH_APPLY``: False applies every message in its own transaction."""
    max_message_size: int = constants.DEFAULT_MAX_MESSAGE_SIZE
    max_message_depth: int = constants.DEFAULT_MAX_MESSAGE_DEPTH
    tombstone_ttl: int | None = constants.DEFAULT_TOMBSTONE_TTL
    state_flush_interval: float = 1.0
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, repr=False)
class CQRSSettings:
    """The whole ``settings.CQRS``, parsed.

    Its ``repr()`` masks the broker URLs' passwords and ``password``-like keys: it is printed
    as a local variable by Django's debug page and error trackers.
    """

    configured: bool
    transport: str | None
    queue: str | None
    url: str | None
    host: str | None
    port: int | str | None
    user: str | None
    password: str | None
    exchange: str
    consumer_prefetch_count: int
    queue_type: str
    transport_options: Mapping[str, Any]
    master: MasterSettings
    replica: ReplicaSettings
    has_master_section: bool
    has_replica_section: bool
    raw: Mapping[str, Any]
    lifecycle_logging: bool = True
    tls: Mapping[str, str] = field(default_factory=dict)
    """``CQRS['tls']``: ``ca_certs``, ``certfile``, ``keyfile`` for ``amqps://`` URLs."""

    def __repr__(self) -> str:
        from dj_cqrs.broker_urls import MASK, mask_value

        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            value = MASK if item.name == 'password' and value else mask_value(value)
            shown.append(f'{item.name}={value!r}')
        return f'{type(self).__name__}({", ".join(shown)})'

    @property
    def dead_letter_queue(self) -> str:
        """Name of this service's dead-letter queue."""
        return self.replica.dead_letter_queue or f'dead_letter_{self.queue}'


def _int_or_default(
    section: Mapping[str, Any],
    key: str,
    default: Any,
    *,
    minimum: int,
    allow_none: bool,
    message: str,
) -> Any:
    value = section.get(key, _UNSET)
    if value is _UNSET:
        return default
    if value is None and allow_none:
        return None
    if isinstance(value, int) and value >= minimum:
        return value
    # Same words as the original: operators search logs for them. The system check reports
    # the same problem as a warning with a hint.
    logger.warning(message, value, default)
    return default


def _import_master_hook(key: str, value: Any) -> Any:
    """The object a ``CQRS['master'][key]`` dotted path names (other values as they are)."""
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as err:
        raise ConfigurationError(
            f"CQRS['master']['{key}'] = {value!r} cannot be imported: {err}"
        ) from err


def _resolve_meta_function(value: Any) -> Callable[..., Any] | None:
    if not value:
        return None
    value = _import_master_hook('meta_function', value)
    if not inspect.isfunction(value):
        raise ConfigurationError("CQRS['master']['meta_function'] must be a function.")
    params = inspect.signature(value).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise ConfigurationError("CQRS['master']['meta_function'] must support **kwargs.")
    return value


def _resolve_correlation_function(value: Any) -> Callable[..., Any] | None:
    if not value:
        return None
    value = _import_master_hook('correlation_function', value)
    if not callable(value):
        raise ConfigurationError("CQRS['master']['correlation_function'] must be callable.")
    return value


def _seconds(section: Mapping[str, Any], key: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigurationError(
            f"CQRS['master']['{key}'] must be a number of seconds >= 0, got {value!r}."
        )
    return float(value)


def parse_master(section: Mapping[str, Any]) -> MasterSettings:
    """Parse ``CQRS['master']``."""
    auto_update = section.get(
        'CQRS_AUTO_UPDATE_FIELDS', constants.DEFAULT_MASTER_AUTO_UPDATE_FIELDS
    )
    if not isinstance(auto_update, bool):
        raise ConfigurationError(
            f"CQRS['master']['CQRS_AUTO_UPDATE_FIELDS'] must be bool, got {auto_update!r}."
        )
    ttl = _int_or_default(
        section,
        'CQRS_MESSAGE_TTL',
        constants.DEFAULT_MASTER_MESSAGE_TTL,
        minimum=1,
        allow_none=True,
        message='Settings CQRS_MESSAGE_TTL=%s is invalid, using default %s.',
    )
    outbox_mode = section.get('CQRS_OUTBOX_MODE', 'fallback')
    if outbox_mode not in ('fallback', 'transactional', 'off'):
        raise ConfigurationError(
            "CQRS['master']['CQRS_OUTBOX_MODE'] must be 'fallback', 'transactional' or 'off', "
            f'got {outbox_mode!r}.'
        )
    retries = section.get('CQRS_PUBLISH_RETRIES', constants.DEFAULT_PUBLISH_RETRIES)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigurationError(
            f"CQRS['master']['CQRS_PUBLISH_RETRIES'] must be an int >= 0, got {retries!r}."
        )
    confirms = section.get('CQRS_PUBLISH_CONFIRMS', 'async')
    if confirms not in ('sync', 'async'):
        raise ConfigurationError(
            f"CQRS['master']['CQRS_PUBLISH_CONFIRMS'] must be 'sync' or 'async', got {confirms!r}."
        )
    return MasterSettings(
        auto_update_fields=auto_update,
        message_ttl=ttl,
        correlation_function=_resolve_correlation_function(section.get('correlation_function')),
        meta_function=_resolve_meta_function(section.get('meta_function')),
        publish_retries=retries,
        outbox_mode=outbox_mode,
        outbox_hold=_seconds(section, 'CQRS_OUTBOX_HOLD', constants.DEFAULT_OUTBOX_HOLD),
        outbox_grace=_seconds(section, 'CQRS_OUTBOX_GRACE', constants.DEFAULT_OUTBOX_GRACE),
        outbox_retry_delay=_seconds(
            section, 'CQRS_OUTBOX_RETRY_DELAY', constants.DEFAULT_OUTBOX_RETRY_DELAY
        ),
        publish_confirms=confirms,
        raw=MappingProxyType(dict(section)),
    )


def parse_replica(section: Mapping[str, Any]) -> ReplicaSettings:
    """Parse ``CQRS['replica']``."""
    max_retries = _int_or_default(
        section,
        'CQRS_MAX_RETRIES',
        constants.DEFAULT_REPLICA_MAX_RETRIES,
        minimum=0,
        allow_none=True,
        message='Replica setting CQRS_MAX_RETRIES=%s is invalid, using default %s.',
    )
    retry_delay = _int_or_default(
        section,
        'CQRS_RETRY_DELAY',
        constants.DEFAULT_REPLICA_RETRY_DELAY,
        minimum=0,
        allow_none=False,
        message='Replica setting CQRS_RETRY_DELAY=%s is invalid, using default %s.',
    )
    size_key = 'delay_queue_max_size'
    if size_key not in section and 'CQRS_DELAY_QUEUE_MAX_SIZE' in section:
        size_key = 'CQRS_DELAY_QUEUE_MAX_SIZE'
    delay_size = _int_or_default(
        section,
        size_key,
        constants.DEFAULT_REPLICA_DELAY_QUEUE_MAX_SIZE,
        minimum=1,
        allow_none=True,
        message='Settings delay_queue_max_size=%s is invalid, using default %s.',
    )
    dead_ttl = section.get('dead_message_ttl', constants.DEFAULT_DEAD_MESSAGE_TTL)
    batch_size = section.get('CQRS_BATCH_SIZE', constants.DEFAULT_REPLICA_BATCH_SIZE)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigurationError(
            f"CQRS['replica']['CQRS_BATCH_SIZE'] must be an int >= 1, got {batch_size!r}."
        )
    tombstone_ttl = section.get('CQRS_TOMBSTONE_TTL', constants.DEFAULT_TOMBSTONE_TTL)
    return ReplicaSettings(
        max_retries=max_retries,
        retry_delay=retry_delay,
        delay_queue_max_size=delay_size,
        dead_letter_queue=section.get('dead_letter_queue'),
        dead_message_ttl=dead_ttl,
        query_timeout=section.get('CQRS_QUERY_TIMEOUT') or 0,
        log_timed_out_queries=bool(section.get('CQRS_LOG_TIMED_OUT_QUERIES')),
        query_logger=section.get('CQRS_QUERY_LOGGER') or constants.LOGGER_NAME,
        batch_size=batch_size,
        max_message_size=section.get('CQRS_MAX_MESSAGE_SIZE', constants.DEFAULT_MAX_MESSAGE_SIZE),
        max_message_depth=section.get(
            'CQRS_MAX_MESSAGE_DEPTH', constants.DEFAULT_MAX_MESSAGE_DEPTH
        ),
        tombstone_ttl=tombstone_ttl,
        state_flush_interval=_state_flush_interval(section),
        raw=MappingProxyType(dict(section)),
    )


def _state_flush_interval(section: Mapping[str, Any]) -> float:
    value = section.get('CQRS_STATE_FLUSH_INTERVAL', 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigurationError(
            "CQRS['replica']['CQRS_STATE_FLUSH_INTERVAL'] must be a number of seconds >= 0, "
            f'got {value!r}.'
        )
    return float(value)


TLS_OPTIONS = ('ca_certs', 'certfile', 'keyfile')


def parse_tls(value: Any) -> Mapping[str, str]:
    """Parse ``CQRS['tls']``: paths of the CA bundle and of the client certificate and key."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"CQRS['tls'] must be a dict, got {type(value).__name__}.")
    unknown = sorted(set(value) - set(TLS_OPTIONS))
    if unknown:
        raise ConfigurationError(
            f"CQRS['tls'] has unknown keys {unknown}; the options are {list(TLS_OPTIONS)}."
        )
    for key, path in value.items():
        if not isinstance(path, str) or not path:
            raise ConfigurationError(f"CQRS['tls']['{key}'] must be a file path, got {path!r}.")
    if 'keyfile' in value and 'certfile' not in value:
        raise ConfigurationError("CQRS['tls']['keyfile'] is set without 'certfile'.")
    return MappingProxyType(dict(value))


def parse(raw: Any) -> CQRSSettings:
    """Parse a ``settings.CQRS`` value (``None`` when the project has none)."""
    configured = raw is not None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f'settings.CQRS must be a dict, got {type(raw).__name__}.')
    master_raw = raw.get('master', {})
    replica_raw = raw.get('replica', {})
    if not isinstance(master_raw, Mapping):
        raise ConfigurationError("CQRS['master'] must be a dict.")
    if not isinstance(replica_raw, Mapping):
        raise ConfigurationError("CQRS['replica'] must be a dict.")
    return CQRSSettings(
        configured=configured,
        transport=raw.get('transport') or None,
        queue=raw.get('queue'),
        url=raw.get('url'),
        host=raw.get('host'),
        port=raw.get('port'),
        user=raw.get('user'),
        password=raw.get('password'),
        exchange=raw.get('exchange') or constants.DEFAULT_EXCHANGE,
        consumer_prefetch_count=raw.get(
            'consumer_prefetch_count', constants.DEFAULT_CONSUMER_PREFETCH_COUNT
        ),
        queue_type=raw.get('queue_type', 'classic'),
        transport_options=MappingProxyType(dict(raw.get('transport_options') or {})),
        master=parse_master(master_raw),
        replica=parse_replica(replica_raw),
        has_master_section='master' in raw,
        has_replica_section='replica' in raw,
        raw=MappingProxyType(dict(raw)),
        lifecycle_logging=bool(raw.get('lifecycle_logging', True)),
        tls=parse_tls(raw.get('tls')),
    )


_lock = threading.Lock()
_cached: CQRSSettings | None = None
_source: Any = _UNSET
"""The ``settings.CQRS`` object ``_cached`` was parsed from."""
_snapshot: Any = _UNSET
"""A copy of its dicts and lists as they were then: compared on every call, so that a test that
changes ``settings.CQRS['master'][...]`` in place (as suites written for the original do) is
seen by the next save, without parsing anything while nothing changed."""


def _copy_containers(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_containers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_containers(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_copy_containers(item) for item in value)
    return value


def get_settings() -> CQRSSettings:
    """The parsed ``settings.CQRS`` (parsed on first use, then cached).

    Re-parsed when ``settings.CQRS`` is replaced (``override_settings``, pytest-django's
    ``settings`` fixture) or changed in place: the check is one identity test and one ``==``
    of the dict against a copy kept from the last parse (a few hundred nanoseconds).
    """
    current = _cached
    # Read from the configured settings object itself: through ``django.conf.settings`` a read
    # costs about a microsecond (``LazyObject`` checks every attribute it returns, in Python),
    # and a save reads the settings several times.
    if (
        current is not None
        and _source == _snapshot
        and getattr(_get_attribute(django_settings, '_wrapped'), 'CQRS', None) is _source
    ):
        return current
    raw = getattr(django_settings, 'CQRS', None)
    if current is not None:
        reset()  # changed in place: drop what was derived from the old values too
    return _parse_and_keep(raw)


_get_attribute = object.__getattribute__


def _parse_and_keep(raw: Any) -> CQRSSettings:
    global _cached, _source, _snapshot
    with _lock:
        if _cached is None or raw is not _source or raw != _snapshot:
            snapshot = _copy_containers(raw)
            _cached = parse(raw)
            _source, _snapshot = raw, snapshot
        return _cached


def reset(**kwargs: Any) -> None:
    """Drop the cached settings (and everything derived from them)."""
    global _cached, _source, _snapshot
    if kwargs.get('setting') not in (None, 'CQRS'):
        return
    with _lock:
        _cached, _source, _snapshot = None, _UNSET, _UNSET
    for callback in list(_reset_callbacks):
        callback()


_reset_callbacks: list[Callable[[], None]] = []


def on_reset(callback: Callable[[], None]) -> Callable[[], None]:
    """Register ``callback`` to run whenever the settings are re-read."""
    _reset_callbacks.append(callback)
    return callback
