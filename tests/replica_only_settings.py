"""A replica-only service (no master app): what a ``cqrs_consume`` worker process loads.

The transport comes from ``CQRS_TEST_TRANSPORT`` (default RabbitMQTransport).
"""

import os

SECRET_KEY = 'dj-cqrs-replica-only'
USE_TZ = True
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
INSTALLED_APPS = ['django.contrib.contenttypes', 'dj_cqrs', 'tests.dj_replica']
DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}
CQRS = {
    'transport': os.environ.get('CQRS_TEST_TRANSPORT', 'dj_cqrs.transport.RabbitMQTransport'),
    'url': os.environ.get('CQRS_TEST_URL', 'amqp://guest:guest@127.0.0.1:5672/%2F'),
    'queue': 'replica',
    'replica': {'CQRS_MAX_RETRIES': 2},
}
