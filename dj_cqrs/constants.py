"""Constants shared by both sides (names and values as in django-cqrs 3.1)."""

ALL_BASIC_FIELDS = '__all__'

FIELDS_TRACKER_FIELD_NAME = '__fields_tracker'
TRACKED_FIELDS_ATTR_NAME = '__tracked_fields'


class SignalType:
    """Type of a replication message."""

    SAVE = 'SAVE'
    """A create or update of a master row."""

    DELETE = 'DELETE'
    """A deleted master row."""

    SYNC = 'SYNC'
    """A forced re-send of a master row; applied even when it downgrades the revision."""


SIGNAL_TYPES = frozenset((SignalType.SAVE, SignalType.DELETE, SignalType.SYNC))

NO_QUEUE = 'None'

DEFAULT_DEAD_MESSAGE_TTL = 864000
DEFAULT_MASTER_AUTO_UPDATE_FIELDS = False
DEFAULT_MASTER_MESSAGE_TTL = 86400
DEFAULT_REPLICA_MAX_RETRIES = 30
DEFAULT_REPLICA_RETRY_DELAY = 2
DEFAULT_REPLICA_DELAY_QUEUE_MAX_SIZE = 1000

# Added by this implementation.
DEFAULT_EXCHANGE = 'cqrs'
DEFAULT_CONSUMER_PREFETCH_COUNT = 10
DEFAULT_REPLICA_BATCH_SIZE = 100
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
DEFAULT_MAX_MESSAGE_DEPTH = 64
DEFAULT_PUBLISH_RETRIES = 3
DEFAULT_TOMBSTONE_TTL = 7 * 24 * 3600
DEFAULT_OUTBOX_HOLD = 5.0
DEFAULT_OUTBOX_GRACE = 10.0
DEFAULT_OUTBOX_RETRY_DELAY = 1.0

DB_VENDOR_PG = 'postgresql'
DB_VENDOR_MYSQL = 'mysql'
SUPPORTED_TIMEOUT_DB_VENDORS = {DB_VENDOR_MYSQL, DB_VENDOR_PG}

PG_TIMEOUT_FLAG = 'statement timeout'
MYSQL_TIMEOUT_ERROR_CODE = 3024
MARIADB_TIMEOUT_ERROR_CODE = 1969  # ER_STATEMENT_TIMEOUT (max_statement_time exceeded)

LOGGER_NAME = 'django-cqrs'
