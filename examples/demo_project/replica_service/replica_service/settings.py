"""Settings of the demo REPLICA service: it keeps read-only copies of the master's shop data.

Environment (the demo runner sets these; the defaults suit running both services by hand from
their folders, see README.md):

- ``DEMO_DATA_DIR``: folder of the SQLite database and of the ``filesystem://`` broker
  (default ``examples/demo_project/var``, shared with the replica service).
- ``DEMO_BROKER_URL``: ``filesystem://`` (default, no broker to install), ``amqp://...``
  (RabbitMQ) or ``redis://...`` (Kombu over Redis).
- ``DEMO_EXCHANGE``: the topic exchange (default ``cqrs``).
- ``DEMO_QUEUE``: the queue this service consumes (default ``demo_replica``).
"""

import os
from pathlib import Path

SERVICE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get('DEMO_DATA_DIR') or SERVICE_DIR.parent / 'var')
DATA_DIR.mkdir(parents=True, exist_ok=True)
BROKER_URL = os.environ.get('DEMO_BROKER_URL') or 'filesystem://'

SECRET_KEY = 'demo-replica-not-a-secret'
DEBUG = True
ALLOWED_HOSTS = ['127.0.0.1', 'localhost']
ROOT_URLCONF = 'replica_service.urls'
USE_TZ = True
TIME_ZONE = 'UTC'
STATIC_URL = 'static/'
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'

INSTALLED_APPS = [
    'django.contrib.admin',
    'django.contrib.auth',
    'django.contrib.contenttypes',
    'django.contrib.sessions',
    'django.contrib.messages',
    'django.contrib.staticfiles',
    'dj_cqrs',  # the outbox table and the cqrs_* commands
    'catalog',
]

DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': DATA_DIR / 'replica.sqlite3',
        'OPTIONS': {'timeout': 20},
    }
}

# --- CQRS: this service is a replica (it has ReplicaMixin models) ---------------------------
CQRS = {
    # Over amqp:// the RabbitMQ transport; over filesystem:// and redis:// the Kombu one.
    'transport': (
        'dj_cqrs.transport.RabbitMQTransport'
        if BROKER_URL.startswith(('amqp://', 'amqps://'))
        else 'dj_cqrs.transport.KombuTransport'
    ),
    'url': BROKER_URL,
    'exchange': os.environ.get('DEMO_EXCHANGE') or 'cqrs',
    # The queue this service consumes; its dead letters go to dead_letter_<queue>.
    'queue': os.environ.get('DEMO_QUEUE') or 'demo_replica',
    'replica': {
        'CQRS_MAX_RETRIES': 3,  # a failing message is retried 3 times...
        'CQRS_RETRY_DELAY': 1,  # ...1 s apart, then dead-lettered
    },
}
if BROKER_URL.startswith('filesystem://'):
    # Kombu's filesystem broker: messages are files in one folder and the exchange's
    # bindings a file in another. Every process that uses the same folders shares the broker.
    CQRS['transport_options'] = {
        'data_folder_in': str(DATA_DIR / 'broker' / 'messages'),
        'data_folder_out': str(DATA_DIR / 'broker' / 'messages'),
        'control_folder': str(DATA_DIR / 'broker' / 'control'),
        'store_processed': False,
        'polling_interval': 0.1,  # seconds between looks for new messages (default 1)
    }
    for folder in ('messages', 'control'):
        (DATA_DIR / 'broker' / folder).mkdir(parents=True, exist_ok=True)

MIDDLEWARE = [
    'django.contrib.sessions.middleware.SessionMiddleware',
    'django.middleware.common.CommonMiddleware',
    'django.middleware.csrf.CsrfViewMiddleware',
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

LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'formatters': {'plain': {'format': '%(asctime)s replica %(levelname)s %(message)s'}},
    'handlers': {'console': {'class': 'logging.StreamHandler', 'formatter': 'plain'}},
    'loggers': {'django-cqrs': {'handlers': ['console'], 'level': 'INFO'}},
}
