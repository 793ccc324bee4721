"""Settings for running the test project's commands in real ``manage.py`` subprocesses.

Same apps and models as ``tests.settings`` (master and replica side in one project, in-process
transport), but a SQLite file (env ``CQRS_CMD_DB``) so several processes share the data, and
the django-cqrs log on stderr as ``LEVEL django-cqrs message`` like the golden captures.
"""

import os

from tests.settings import *  # noqa: F403

DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': os.environ.get('CQRS_CMD_DB', 'cqrs_cmd.sqlite3'),
    }
}

LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'formatters': {'plain': {'format': '%(levelname)s %(name)s %(message)s'}},
    'handlers': {'stderr': {'class': 'logging.StreamHandler', 'formatter': 'plain'}},
    'loggers': {'django-cqrs': {'level': 'INFO', 'handlers': ['stderr'], 'propagate': False}},
}
