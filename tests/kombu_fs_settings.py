"""Settings of the subprocess consumer in ``test_kombu_filesystem.py``: a file DB, CQRS from env."""

import json
import os

from tests.settings import *  # noqa: F403 (the unit test project, with two overrides)

DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': os.environ['KOMBU_FS_DB']}}
CQRS = json.loads(os.environ['KOMBU_FS_CQRS'])
