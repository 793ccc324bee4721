"""Replica service of the integration tests: PostgreSQL (or MariaDB/MySQL with
``CQRS_IT_DB_ENGINE=mariadb``), replica models only."""

import os

from _service_settings import LOGGING, cqrs_settings

SECRET_KEY = 'cqrs-it-replica'
DEBUG = False
USE_TZ = True
TIME_ZONE = 'UTC'
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
INSTALLED_APPS = ['django.contrib.contenttypes', 'dj_cqrs', 'replicaapp']
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.postgresql',
        'NAME': os.environ.get('CQRS_IT_DB', 'cqrs_it_replica'),
        'USER': os.environ.get('PGUSER', 'postgres'),
        'HOST': os.environ.get('PGHOST', '127.0.0.1'),
        'PORT': os.environ.get('PGPORT', '5432'),
    }
}
if os.environ.get('CQRS_IT_DB_ENGINE') == 'mariadb':
    DATABASES = {
        'default': {
            'ENGINE': 'django.db.backends.mysql',
            'NAME': os.environ.get('CQRS_IT_DB', 'cqrs_it_replica'),
            'USER': os.environ.get('MYSQL_USER', 'root'),
            'PASSWORD': os.environ.get('MYSQL_PASSWORD', ''),
            'HOST': os.environ.get('MYSQL_HOST', '127.0.0.1'),
            'PORT': os.environ.get('MYSQL_PORT', '3306'),
            'OPTIONS': {'charset': 'utf8mb4'},
        }
    }
CQRS = cqrs_settings('it_replica')
__all__ = ['LOGGING']
