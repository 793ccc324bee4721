"""Settings of the test project: master and replica apps in one process.

``DB=postgres`` runs the suite on PostgreSQL at 127.0.0.1:5432, ``DB=mariadb`` (or ``DB=mysql``)
on MariaDB/MySQL at 127.0.0.1:3306 with the mysqlclient driver (default: SQLite in memory).
"""

import os

SECRET_KEY = 'dj-cqrs-tests'
DEBUG = False
USE_TZ = True
TIME_ZONE = 'UTC'
ROOT_URLCONF = 'tests.urls'
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'

INSTALLED_APPS = [
    'django.contrib.admin',
    'django.contrib.auth',
    'django.contrib.contenttypes',
    'django.contrib.sessions',
    'django.contrib.messages',
    'rest_framework',
    'dj_cqrs',
    'tests.dj_master',
    'tests.dj_replica',
]

MIDDLEWARE = [
    'django.contrib.sessions.middleware.SessionMiddleware',
    'django.contrib.auth.middleware.AuthenticationMiddleware',
    'django.contrib.messages.middleware.MessageMiddleware',
]

TEMPLATES = [
    {
        'BACKEND': 'django.template.backends.django.DjangoTemplates',
        'APP_DIRS': True,
        'OPTIONS': {
            'context_processors': [
                'django.template.context_processors.request',
                'django.contrib.auth.context_processors.auth',
                'django.contrib.messages.context_processors.messages',
            ]
        },
    }
]

if os.environ.get('DB') == 'postgres':
    DATABASES = {
        'default': {
            'ENGINE': 'django.db.backends.postgresql',
            'NAME': os.environ.get('PGDATABASE', 'cqrs_tests'),
            'USER': os.environ.get('PGUSER', 'postgres'),
            'HOST': os.environ.get('PGHOST', '127.0.0.1'),
            'PORT': os.environ.get('PGPORT', '5432'),
            # One test database per run: two runs at once must not drop each other's tables.
            'TEST': {'NAME': f'test_cqrs_{os.getpid()}'},
        }
    }
elif os.environ.get('DB') in ('mariadb', 'mysql'):
    DATABASES = {
        'default': {
            'ENGINE': 'django.db.backends.mysql',
            'NAME': os.environ.get('MYSQL_DATABASE', 'cqrs_tests'),
            'USER': os.environ.get('MYSQL_USER', 'root'),
            'PASSWORD': os.environ.get('MYSQL_PASSWORD', ''),
            'HOST': os.environ.get('MYSQL_HOST', '127.0.0.1'),
            'PORT': os.environ.get('MYSQL_PORT', '3306'),
            'OPTIONS': {'charset': 'utf8mb4'},
            # One test database per run: two runs at once must not drop each other's tables.
            'TEST': {'NAME': f'test_cqrs_{os.getpid()}', 'CHARSET': 'utf8mb4'},
        }
    }
else:
    DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}

CQRS = {
    'transport': 'dj_cqrs.transport.InProcessTransport',
    'queue': 'replica',
    'master': {'CQRS_AUTO_UPDATE_FIELDS': False, 'CQRS_MESSAGE_TTL': 86400},
    'replica': {'CQRS_MAX_RETRIES': 2, 'CQRS_RETRY_DELAY': 0},
}

LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'loggers': {'django-cqrs': {'level': 'DEBUG', 'propagate': True}},
}
