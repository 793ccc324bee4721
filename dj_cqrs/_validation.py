"""``validate_settings`` (name kept from django-cqrs 3.1): fail fast on a broken configuration.

``CQRSConfig.ready()`` calls it, so that, as with the original, a service whose
``settings.CQRS`` is invalid does not start, also under gunicorn or uwsgi (no system checks).
"""

from __future__ import annotations

from django.core import checks

from dj_cqrs.checks import check_settings
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.registries import MasterRegistry, ReplicaRegistry


def validate_settings(settings: object = None) -> None:
    """Raise ``ConfigurationError`` listing every error of ``settings.CQRS``.

    As in the original, a project without any CQRS model is not checked.
    """
    if not (MasterRegistry.models or ReplicaRegistry.models):
        return
    errors = [m for m in check_settings() if m.level >= checks.ERROR]
    if errors:
        raise ConfigurationError(
            'settings.CQRS is invalid: '
            + '; '.join(
                f'{m.id}: {m.msg}' + (f' (hint: {m.hint})' if m.hint else '') for m in errors
            )
        )
