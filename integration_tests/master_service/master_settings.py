"""Master service of the integration tests: SQLite file, master models only."""

import os

from _service_settings import LOGGING, cqrs_settings

SECRET_KEY = 'cqrs-it-master'
DEBUG = False
USE_TZ = True
TIME_ZONE = 'UTC'
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
INSTALLED_APPS = ['django.contrib.contenttypes', 'rest_framework', 'dj_cqrs', 'masterapp']
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': os.environ.get('CQRS_IT_DB', '/tmp/cqrs_it_master.sqlite3'),
    }
}
CQRS = cqrs_settings('it_master')
__all__ = ['LOGGING']
