"""Django app config: registers the checks and receivers; an invalid ``settings.CQRS`` stops it."""

import sys

from django.apps import AppConfig


class CQRSConfig(AppConfig):
    name = 'dj_cqrs'
    verbose_name = 'Django CQRS'
    default_auto_field = 'django.db.models.BigAutoField'

    def ready(self) -> None:
        from django.core import checks as django_checks
        from django.core.signals import setting_changed

        from dj_cqrs import _validation, checks, conf
        from dj_cqrs.observability import lag, logging

        django_checks.register(checks.check_settings, 'dj_cqrs')
        logging.connect()
        lag.connect()
        setting_changed.connect(conf.reset, dispatch_uid='dj_cqrs.conf.reset')
        if sys.argv[1:2] != ['check']:  # ``manage.py check`` lists the problems itself
            _validation.validate_settings()
