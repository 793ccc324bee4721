"""Timed-out query logging (public path of django-cqrs 3.1)."""

from dj_cqrs.replica.timeouts import (
    _connection,
    _get_last_query_capturer,
    _LastQueryCaptureWrapper,
    install_last_query_capturer,
    log_timed_out_queries,
)

__all__ = [
    '_LastQueryCaptureWrapper',
    '_connection',
    '_get_last_query_capturer',
    'install_last_query_capturer',
    'log_timed_out_queries',
]
