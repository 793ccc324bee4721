"""``validate_settings`` (name kept from django-cqrs 3.1): fail fast on a broken configuration.

Unlike the original it never writes into ``settings.CQRS``; problems are raised as
:class:`dj_cqrs.exceptions.ConfigurationError` with the system check's text.
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from dj_cqrs.checks import check_settings
from dj_cqrs.exceptions import ConfigurationError


def validate_settings(settings: Any = None) -> None:
    errors = [m for m in check_settings() if m.level >= checks.ERROR]
    if errors:
        raise ConfigurationError('; '.join(f'{m.id}: {m.msg}' for m in errors))
