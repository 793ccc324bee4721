"""Statement timeouts for replica writes and the log of queries that hit them."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections, router

from dj_cqrs.conf import get_settings
from dj_cqrs.constants import (
    DB_VENDOR_MYSQL,
    DB_VENDOR_PG,
    MARIADB_TIMEOUT_ERROR_CODE,
    MYSQL_TIMEOUT_ERROR_CODE,
    PG_TIMEOUT_FLAG,
    SUPPORTED_TIMEOUT_DB_VENDORS,
)


class _LastQueryCaptureWrapper:
    """Execute wrapper that remembers the last SQL statement of a connection."""

    def __init__(self) -> None:
        self.query: str | None = None

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.query = sql
        return execute(sql, params, many, context)


def _connection(model_cls: Any) -> Any:
    return connections[router.db_for_write(model_cls)]


def install_last_query_capturer(model_cls: Any) -> None:
    if _get_last_query_capturer(model_cls) is None:
        _connection(model_cls).execute_wrappers.append(_LastQueryCaptureWrapper())


def _get_last_query_capturer(model_cls: Any) -> _LastQueryCaptureWrapper | None:
    wrappers = _connection(model_cls).execute_wrappers
    return next((w for w in wrappers if isinstance(w, _LastQueryCaptureWrapper)), None)


def apply_query_timeouts(model_cls: Any) -> None:
    """``SET statement_timeout`` (PostgreSQL), ``MAX_EXECUTION_TIME`` (MySQL) or
    ``max_statement_time`` (MariaDB, in seconds; it has no ``MAX_EXECUTION_TIME``) if configured."""
    timeout = get_settings().replica.query_timeout
    if not timeout or timeout <= 0:
        return
    connection = _connection(model_cls)
    vendor = connection.vendor
    if vendor not in SUPPORTED_TIMEOUT_DB_VENDORS:
        return
    if getattr(connection, '_cqrs_timeout_applied', None) == (id(connection.connection), timeout):
        return
    with connection.cursor() as cursor:
        if vendor == DB_VENDOR_PG:
            cursor.execute(f'SET statement_timeout TO {int(timeout)}')
        elif getattr(connection, 'mysql_is_mariadb', False):
            cursor.execute(f'SET SESSION max_statement_time={int(timeout) / 1000:.3f}')
        else:
            cursor.execute(f'SET SESSION MAX_EXECUTION_TIME={int(timeout)}')
    connection._cqrs_timeout_applied = (id(connection.connection), timeout)
    install_last_query_capturer(model_cls)


def is_timeout_error(error: BaseException, vendor: str) -> bool:
    args = getattr(error, 'args', ())
    if not args:
        return False
    if vendor == DB_VENDOR_PG:
        return PG_TIMEOUT_FLAG in str(args[0])
    if vendor == DB_VENDOR_MYSQL:
        return args[0] in (MYSQL_TIMEOUT_ERROR_CODE, MARIADB_TIMEOUT_ERROR_CODE)
    return False


def log_timed_out_queries(error: BaseException, model_cls: Any) -> None:
    """Log the statement that hit the timeout (``CQRS_LOG_TIMED_OUT_QUERIES``)."""
    replica = get_settings().replica
    if not replica.log_timed_out_queries:
        return
    if not is_timeout_error(error, _connection(model_cls).vendor):
        return
    capturer = _get_last_query_capturer(model_cls)
    if capturer is not None and capturer.query:
        logging.getLogger(replica.query_logger).error('Timed out query:\n%s', capturer.query)
