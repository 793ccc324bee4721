"""Settings of the benchmark master and replica services, chosen by environment variables.

| variable | meaning | default |
|---|---|---|
| ``BENCH_ROLE`` | ``master`` (app ``bench_master``) or ``replica`` (``bench_replica``) | master |
| ``BENCH_DB`` | ``sqlite``, ``postgres`` or ``mariadb`` (``MYSQL_USER``...) | sqlite |
| ``BENCH_DB_NAME`` | SQLite file path, or PostgreSQL/MariaDB database | ``/tmp/bench.sqlite3`` |
| ``BENCH_QUEUE`` | the replica's queue (the master's own name) | ``bench`` |
| ``BENCH_EXTRA`` | JSON merged into ``CQRS`` (``master``/``replica`` merged key by key) | ``{}`` |
| ``BENCH_LOG_LEVEL`` | level of the ``django-cqrs`` logger (to stderr) | ``WARNING`` |
"""

import json
import os

ROLE = os.environ.get('BENCH_ROLE', 'master')
SECRET_KEY = 'cqrs-bench'
DEBUG = False
USE_TZ = True
TIME_ZONE = 'UTC'
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
INSTALLED_APPS = ['django.contrib.contenttypes', 'dj_cqrs', f'bench_{ROLE}']

if os.environ.get('BENCH_DB', 'sqlite') == 'postgres':
    DATABASES = {
        'default': {
            'ENGINE': 'django.db.backends.postgresql',
            'NAME': os.environ.get('BENCH_DB_NAME', 'cqrs_bench'),
            'USER': os.environ.get('PGUSER', 'postgres'),
            'HOST': os.environ.get('PGHOST', '127.0.0.1'),
            'PORT': os.environ.get('PGPORT', '5432'),
            'CONN_MAX_AGE': None,
        }
    }
elif os.environ.get('BENCH_DB') == 'mariadb':
    DATABASES = {
        'default': {
            'ENGINE': 'django.db.backends.mysql',
            'NAME': os.environ.get('BENCH_DB_NAME', 'cqrs_bench'),
            'USER': os.environ.get('MYSQL_USER', 'root'),
            'PASSWORD': os.environ.get('MYSQL_PASSWORD', ''),
            'HOST': os.environ.get('MYSQL_HOST', '127.0.0.1'),
            'PORT': os.environ.get('MYSQL_PORT', '3306'),
            'CONN_MAX_AGE': None,
            'OPTIONS': {'charset': 'utf8mb4'},
        }
    }
else:
    DATABASES = {
        'default': {
            'ENGINE': 'django.db.backends.sqlite3',
            'NAME': os.environ.get('BENCH_DB_NAME', '/tmp/bench.sqlite3'),
            # WAL: the harness reads the replica while the worker writes it. IMMEDIATE: the
            # worker's lag flusher thread also writes; a deferred transaction that read first
            # would fail with "database is locked" instead of waiting its turn.
            'CONN_MAX_AGE': None,
            'OPTIONS': {
                'init_command': 'PRAGMA journal_mode=WAL;',
                'transaction_mode': 'IMMEDIATE',
                'timeout': 20,
            },
        }
    }

CQRS = {
    'transport': os.environ.get('BENCH_TRANSPORT', 'dj_cqrs.transport.RabbitMQTransport'),
    'url': os.environ.get('BENCH_URL', 'amqp://guest:guest@127.0.0.1:5672/'),
    'queue': os.environ.get('BENCH_QUEUE', 'bench'),
    'master': {'CQRS_AUTO_UPDATE_FIELDS': False, 'CQRS_MESSAGE_TTL': 86400},
    'replica': {'CQRS_MAX_RETRIES': 2, 'CQRS_RETRY_DELAY': 1},
}
for key, value in json.loads(os.environ.get('BENCH_EXTRA') or '{}').items():
    if isinstance(value, dict) and isinstance(CQRS.get(key), dict):
        CQRS[key] = {**CQRS[key], **value}
    else:
        CQRS[key] = value

LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'formatters': {'plain': {'format': '%(levelname)s %(name)s %(message)s'}},
    'handlers': {'stderr': {'class': 'logging.StreamHandler', 'formatter': 'plain'}},
    'loggers': {
        'django-cqrs': {
            'handlers': ['stderr'],
            'level': os.environ.get('BENCH_LOG_LEVEL', 'WARNING'),
            'propagate': False,
        }
    },
}
