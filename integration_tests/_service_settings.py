"""Settings shared by the two integration services, read from environment variables.

The pytest fixtures (``conftest.py``) set these variables; run a service by hand with e.g.::

    CQRS_IT_QUEUE=it_manual CQRS_IT_DB=/tmp/master.sqlite3 python manage.py shell

| variable | meaning | default |
|---|---|---|
| ``CQRS_IT_TRANSPORT`` | transport class path | ``dj_cqrs.transport.RabbitMQTransport`` |
| ``CQRS_IT_URL`` | broker URL | ``amqp://guest:guest@127.0.0.1:5672/`` |
| ``CQRS_IT_QUEUE`` | this service's queue (replica) / its own name (master) | ``it_replica`` |
| ``CQRS_IT_EXCHANGE`` | exchange (the fixtures use one per run: the broker is shared) | ``cqrs`` |
| ``CQRS_IT_DB`` | master: SQLite file; replica: PostgreSQL/MariaDB database | see each settings |
| ``CQRS_IT_DB_ENGINE`` | replica: ``postgres`` or ``mariadb`` (``MYSQL_USER``...) | ``postgres`` |
| ``CQRS_IT_EXTRA`` | JSON merged into ``CQRS`` (``master``/``replica`` key by key) | ``{}`` |
"""

from __future__ import annotations

import json
import os
from typing import Any


def cqrs_settings(default_queue: str) -> dict[str, Any]:
    cqrs: dict[str, Any] = {
        'transport': os.environ.get('CQRS_IT_TRANSPORT', 'dj_cqrs.transport.RabbitMQTransport'),
        'url': os.environ.get('CQRS_IT_URL', 'amqp://guest:guest@127.0.0.1:5672/'),
        'queue': os.environ.get('CQRS_IT_QUEUE', default_queue),
        'exchange': os.environ.get('CQRS_IT_EXCHANGE', 'cqrs'),
        'master': {'CQRS_AUTO_UPDATE_FIELDS': False, 'CQRS_MESSAGE_TTL': 86400},
        'replica': {'CQRS_MAX_RETRIES': 2, 'CQRS_RETRY_DELAY': 1},
    }
    extra = json.loads(os.environ.get('CQRS_IT_EXTRA') or '{}')
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cqrs.get(key), dict):
            cqrs[key] = {**cqrs[key], **value}
        else:
            cqrs[key] = value
    return cqrs


LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'formatters': {'plain': {'format': '%(levelname)s %(name)s %(message)s'}},
    'handlers': {'stderr': {'class': 'logging.StreamHandler', 'formatter': 'plain'}},
    'loggers': {'django-cqrs': {'handlers': ['stderr'], 'level': 'INFO', 'propagate': False}},
}
