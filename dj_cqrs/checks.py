"""System checks for ``settings.CQRS`` (ids ``dj_cqrs.E0xx`` / ``dj_cqrs.W0xx``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core import checks

from dj_cqrs import conf
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.registries import MasterRegistry, ReplicaRegistry

_DOCS_HINT = 'See the settings reference in the dj_cqrs documentation.'
_TLS_HINT = "Give file paths: {'ca_certs': ..., 'certfile': ..., 'keyfile': ...}."


def _error(message: str, hint: str, error_id: str) -> list[checks.CheckMessage]:
    return [checks.Error(message, hint=hint, id=f'dj_cqrs.{error_id}')]


def _refused(check: Callable[[], object], hint: str, error_id: str) -> list[checks.CheckMessage]:
    """The ConfigurationError that ``check()`` raises as a check error (none: no error)."""
    try:
        check()
    except ConfigurationError as err:
        return _error(str(err), hint, error_id)
    return []


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report every problem of ``settings.CQRS`` at once.

    The configured transport is imported, so that a connection option it cannot honour
    (``dj_cqrs.E030``) stops the process at start-up rather than at its first publish.
    """
    is_master = bool(MasterRegistry.models)
    is_replica = bool(ReplicaRegistry.models)
    raw = getattr(django_settings, 'CQRS', None)
    if not (is_master or is_replica) and raw is None:
        return []
    if raw is None:
        hint = 'Add a CQRS dict with at least a "transport" key to your settings.'
        return _error('CQRS configuration must be set in Django project settings.', hint, 'E001')
    if not isinstance(raw, dict):
        hint = f'settings.CQRS is a {type(raw).__name__}.'
        return _error('CQRS configuration must be dict.', hint, 'E002')
    errors = _check_transport(raw)
    errors += _refused(lambda: conf.parse_tls(raw.get('tls')), _TLS_HINT, 'E007')
    if is_master or 'master' in raw:
        errors += _check_section(raw, 'master', 'E010', conf.parse_master)
    if is_replica or 'replica' in raw:
        errors += _check_queue(raw.get('queue'), is_replica)
        errors += _check_section(raw, 'replica', 'E020', conf.parse_replica)
    return errors


def _check_transport(raw: dict[str, Any]) -> list[checks.CheckMessage]:
    from dj_cqrs.transport import resolve

    path = raw.get('transport')
    if not path:
        hint = "Set CQRS['transport'], e.g. 'dj_cqrs.transport.RabbitMQTransport'."
        return _error('CQRS transport is not set.', hint, 'E003')
    try:
        transport = resolve(path)
    except ConfigurationError as err:
        return _error(str(err), _DOCS_HINT, 'E004')
    # The broker connection options (URL query, ``transport_options``, TLS files).
    check = getattr(transport, 'check_connection_settings', None)
    if check is None:
        return []
    try:
        settings = conf.get_settings()
    except ConfigurationError:
        return []  # reported by the section checks
    return _refused(lambda: check(settings), _DOCS_HINT, 'E030')


def _check_section(
    raw: dict[str, Any], key: str, error_id: str, parser: Callable[[Mapping[str, Any]], object]
) -> list[checks.CheckMessage]:
    section = raw.get(key, {})
    if not isinstance(section, dict):
        hint = f"CQRS['{key}'] is a {type(section).__name__}."
        return _error(f'CQRS {key} configuration must be dict.', hint, error_id)
    refused = _refused(lambda: parser(section), _DOCS_HINT, f'{error_id[:-1]}1')
    return refused or _numeric_warnings(key, section)


_NUMERIC = {
    'master': ['CQRS_MESSAGE_TTL'],
    'replica': ['CQRS_MAX_RETRIES', 'CQRS_RETRY_DELAY', 'delay_queue_max_size'],
}


def _numeric_warnings(key: str, section: dict[str, Any]) -> list[checks.CheckMessage]:
    warnings: list[checks.CheckMessage] = []
    for lenient in _NUMERIC[key]:
        minimum, allow_none, _ = conf.LENIENT_INTS[lenient]
        for name in (lenient, conf.ALIASES.get(lenient)):
            if name not in section:
                continue
            value = section[name]
            if value is None and allow_none:
                continue
            if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
                continue
            warnings.append(
                checks.Warning(
                    f"CQRS['{key}']['{name}'] = {value!r} is invalid; the default is used.",
                    hint=f'Use an integer >= {minimum}' + (' or None.' if allow_none else '.'),
                    id='dj_cqrs.W001',
                )
            )
    return warnings


def _check_queue(queue: object, is_replica: bool) -> list[checks.CheckMessage]:
    if not queue:
        message = 'CQRS queue is not set.'
        if is_replica:
            message = 'CQRS queue must be set for the service, that has replica models.'
        return _error(message, "Set CQRS['queue'] to this service's queue name.", 'E005')
    if not isinstance(queue, str):
        hint = f"CQRS['queue'] is a {type(queue).__name__}."
        return _error('CQRS queue must be string.', hint, 'E006')
    return []
