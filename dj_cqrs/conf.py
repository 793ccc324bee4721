"""``settings.CQRS`` parsed once (defaults on a copy) into a typed, read-only, cached object."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, cast

from django.conf import settings as django_settings
from django.utils.module_loading import import_string

from dj_cqrs import constants
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.values import map_leaves

logger = logging.getLogger(constants.LOGGER_NAME)

_UNSET = object()


LENIENT_INTS: dict[str, tuple[int, bool, str]] = {
    # key: minimum, None allowed, the original's words when it ignores a bad value
    'CQRS_MESSAGE_TTL': (1, True, 'Settings'),
    'CQRS_MAX_RETRIES': (0, True, 'Replica setting'),
    'CQRS_RETRY_DELAY': (0, False, 'Replica setting'),
    'delay_queue_max_size': (1, True, 'Settings'),
}
"""Ints that the original replaces by their default (with a warning) when they are bad."""

ALIASES = {'delay_queue_max_size': 'CQRS_DELAY_QUEUE_MAX_SIZE'}
"""A key's other (documented) spelling, read when the key itself is absent."""


def _lenient_int(value: Any, key: str, default: Any) -> Any:
    """``value`` if it is a fit int; else the default (logged with the original's words)."""
    minimum, allow_none, words = LENIENT_INTS[key]
    if value is None and allow_none:
        return None
    if isinstance(value, int) and value >= minimum:
        return value
    # The original's words: operators search logs for them (the system check warns too).
    logger.warning(f'{words} {key}=%s is invalid, using default %s.', value, default)
    return default


def _hook(value: Any, key: str, default: None) -> Callable[..., Any] | None:
    """The function ``CQRS['master'][key]`` names (a dotted path, or the object itself)."""
    value = value or None
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as err:
            raise ConfigurationError(
                f"CQRS['master']['{key}'] = {value!r} cannot be imported: {err}"
            ) from err
    if value is None:
        return None
    if key == 'correlation_function':
        if not callable(value):
            raise ConfigurationError("CQRS['master']['correlation_function'] must be callable.")
        return value
    if not inspect.isfunction(value):
        raise ConfigurationError("CQRS['master']['meta_function'] must be a function.")
    params = inspect.signature(value).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise ConfigurationError("CQRS['master']['meta_function'] must support **kwargs.")
    return value


def _or_default(value: Any, key: str, default: Any) -> Any:
    return value or default


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


_SECONDS = 'a number of seconds >= 0'
_EXPECTED: dict[str, Callable[[Any], bool]] = {
    'bool': lambda value: isinstance(value, bool),
    'an int >= 0': lambda value: _is_int(value, 0),
    'an int >= 1': lambda value: _is_int(value, 1),
    _SECONDS: lambda value: (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    ),
    "'fallback', 'transactional' or 'off'": lambda value: (
        value in ('fallback', 'transactional', 'off')
    ),
    "'sync' or 'async'": lambda value: value in ('sync', 'async'),
}


Rule = str | Callable[[Any, str, Any], Any] | None


def _setting(default: Any, rule: Rule = None, *, plain: bool = False) -> Any:
    """A field of a section: its default, its key (``CQRS_<NAME>``; ``plain``: the name) and how
    :func:`_parse_section` reads its value: a text of ``_EXPECTED`` (else ConfigurationError), a
    function ``(value, key, default)``, or None (taken as it is)."""
    return field(default=default, metadata={'rule': rule, 'plain': plain})


@dataclass(frozen=True)
class MasterSettings:
    """``CQRS['master']`` with defaults applied."""

    auto_update_fields: bool = _setting(constants.DEFAULT_MASTER_AUTO_UPDATE_FIELDS, 'bool')
    message_ttl: int | None = _setting(constants.DEFAULT_MASTER_MESSAGE_TTL, _lenient_int)
    correlation_function: Callable[..., Any] | None = _setting(None, _hook, plain=True)
    meta_function: Callable[..., Any] | None = _setting(None, _hook, plain=True)
    publish_retries: int = _setting(constants.DEFAULT_PUBLISH_RETRIES, 'an int >= 0')
    outbox_mode: str = _setting('fallback', "'fallback', 'transactional' or 'off'")
    outbox_hold: float = _setting(constants.DEFAULT_OUTBOX_HOLD, _SECONDS)
    outbox_grace: float = _setting(constants.DEFAULT_OUTBOX_GRACE, _SECONDS)
    outbox_retry_delay: float = _setting(constants.DEFAULT_OUTBOX_RETRY_DELAY, _SECONDS)
    publish_confirms: str = _setting('async', "'sync' or 'async'")
    """``CQRS_PUBLISH_CONFIRMS``: 'sync' waits in produce(); 'async' collects in a thread."""


@dataclass(frozen=True)
class ReplicaSettings:
    """``CQRS['replica']`` with defaults applied."""

    max_retries: int | None = _setting(constants.DEFAULT_REPLICA_MAX_RETRIES, _lenient_int)
    retry_delay: int = _setting(constants.DEFAULT_REPLICA_RETRY_DELAY, _lenient_int)
    delay_queue_max_size: int | None = _setting(
        constants.DEFAULT_REPLICA_DELAY_QUEUE_MAX_SIZE, _lenient_int, plain=True
    )
    dead_letter_queue: str | None = _setting(None, plain=True)
    dead_message_ttl: int | None = _setting(constants.DEFAULT_DEAD_MESSAGE_TTL, plain=True)
    query_timeout: int = _setting(0, _or_default)
    log_timed_out_queries: bool = _setting(False, lambda value, *_: bool(value))
    query_logger: str = _setting(constants.LOGGER_NAME, _or_default)
    batch_size: int = _setting(constants.DEFAULT_REPLICA_BATCH_SIZE, 'an int >= 1')
    max_message_size: int = _setting(constants.DEFAULT_MAX_MESSAGE_SIZE)
    max_message_depth: int = _setting(constants.DEFAULT_MAX_MESSAGE_DEPTH)
    tombstone_ttl: int | None = _setting(constants.DEFAULT_TOMBSTONE_TTL)
    state_flush_interval: float = _setting(1.0, _SECONDS)

    @property
    def prefetch_count(self) -> int:
        """Unacked messages a RabbitMQ worker may hold: the delay queue's size + 1 (0: no limit)."""
        size = self.delay_queue_max_size
        return 0 if size is None else size + 1


@dataclass(frozen=True, repr=False)
class CQRSSettings:
    """The whole ``settings.CQRS``, parsed (``repr()`` masks passwords: debug pages print it)."""

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
    raw: Mapping[str, Any]
    lifecycle_logging: bool = True
    tls: Mapping[str, str] = field(default_factory=dict)
    """``CQRS['tls']``: ``ca_certs``, ``certfile``, ``keyfile`` for ``amqps://`` URLs."""

    def __repr__(self) -> str:
        from dj_cqrs.broker_urls import mask_value

        values = {item.name: getattr(self, item.name) for item in fields(self)}
        shown = cast(dict, mask_value(values))
        return f'{type(self).__name__}({", ".join(f"{k}={v!r}" for k, v in shown.items())})'

    @property
    def dead_letter_queue(self) -> str:
        """Name of this service's dead-letter queue."""
        return self.replica.dead_letter_queue or f'dead_letter_{self.queue}'


def _parse_section(cls: Any, side: str, section: Mapping[str, Any]) -> Any:
    """``CQRS[side]`` as ``cls``: each field read in turn as its :func:`_setting` says."""
    values = {}
    for item in fields(cls):
        key = item.name if item.metadata['plain'] else f'CQRS_{item.name.upper()}'
        value = section.get(key, section.get(ALIASES.get(key, key), item.default))
        rule = item.metadata['rule']
        if isinstance(rule, str):
            if not _EXPECTED[rule](value):
                raise ConfigurationError(f"CQRS['{side}']['{key}'] must be {rule}, got {value!r}.")
            value = float(value) if rule == _SECONDS else value
        elif rule is not None:
            value = rule(value, key, item.default)
        values[item.name] = value
    return cls(**values)


def parse_master(section: Mapping[str, Any]) -> MasterSettings:
    """Parse ``CQRS['master']``."""
    return _parse_section(MasterSettings, 'master', section)


def parse_replica(section: Mapping[str, Any]) -> ReplicaSettings:
    """Parse ``CQRS['replica']``."""
    return _parse_section(ReplicaSettings, 'replica', section)


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
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f'settings.CQRS must be a dict, got {type(raw).__name__}.')
    for side in ('master', 'replica'):
        if not isinstance(raw.get(side, {}), Mapping):
            raise ConfigurationError(f"CQRS['{side}'] must be a dict.")
    return CQRSSettings(
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
        master=parse_master(raw.get('master', {})),
        replica=parse_replica(raw.get('replica', {})),
        raw=MappingProxyType(dict(raw)),
        lifecycle_logging=bool(raw.get('lifecycle_logging', True)),
        tls=parse_tls(raw.get('tls')),
    )


_lock = threading.Lock()
_cached: CQRSSettings | None = None
# The ``settings.CQRS`` object ``_cached`` was parsed from, and a copy of its containers:
# suites written for the original change ``settings.CQRS['master'][...]`` in place.
_source: Any = _UNSET
_snapshot: Any = _UNSET


def get_settings() -> CQRSSettings:
    """The parsed ``settings.CQRS``: cached, re-parsed when it is replaced or changed in place."""
    global _cached, _source, _snapshot
    current = _cached
    # Read from the configured settings object itself: ``django.conf.settings`` (a LazyObject)
    # checks every attribute it returns, in Python, and a save reads the settings often.
    if (
        current is not None
        and _source == _snapshot
        and getattr(object.__getattribute__(django_settings, '_wrapped'), 'CQRS', None) is _source
    ):
        return current
    raw = getattr(django_settings, 'CQRS', None)
    if current is not None:
        reset()  # changed in place: drop what was derived from the old values too
    with _lock:
        if _cached is None or raw is not _source or raw != _snapshot:
            snapshot = map_leaves(raw, lambda value: value)
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
