"""Correlation ids for messages (from ``CQRS['master']['correlation_function']``)."""

from __future__ import annotations

from dj_cqrs.conf import get_settings


def get_correlation_id(
    signal_type: str, cqrs_id: str, instance_pk: object, queue: str | None
) -> object:
    """The configured function's id for this message, or None when none is configured."""
    function = get_settings().master.correlation_function
    if function is None:
        return None
    return function(signal_type, cqrs_id, instance_pk, queue)
