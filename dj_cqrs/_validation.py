"""``validate_settings`` (name kept from django-cqrs 3.1): fail fast on a broken configuration.

``CQRSConfig.ready()`` calls it, so that, as with the original, a service whose
``settings.CQRS`` is invalid does not start (``manage.py`` commands, ``runserver``, and
gunicorn or uwsgi, which load the app without running the system checks). Unlike the original
it never writes into ``settings.CQRS``; problems are raised as
:class:`dj_cqrs.exceptions.ConfigurationError` (an ``ImproperlyConfigured``) with the system
check's text: ids, messages naming the key, and hints.
"""

from __future__ import annotations

import sys

from django.core import checks

from dj_cqrs.checks import check_settings
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.registries import MasterRegistry, ReplicaRegistry


def validate_settings(settings: object = None) -> None:
    """Raise ``ConfigurationError`` listing every error of ``settings.CQRS``.

    As in the original, a project without any CQRS model is not checked (it starts whatever
    ``settings.CQRS`` holds); ``manage.py check`` still reports such problems.
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


def validate_at_startup() -> None:
    """``validate_settings`` unless this process is ``manage.py check``, which lists the same
    problems itself (with ids and hints, and the other apps' problems beside them)."""
    if sys.argv[1:2] == ['check']:
        return
    validate_settings()
