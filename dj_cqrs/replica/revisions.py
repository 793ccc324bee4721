"""The original's revision rules: whether a message's revision may replace a row's, and the lines
they log."""

from __future__ import annotations

import logging
from typing import Any

from dj_cqrs.constants import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

LogLines = list[tuple[int, str, tuple[object, ...]]]
"""Log lines kept for later: ``(level, message, args)`` each."""


def log(lines: LogLines | None, level: int, message: str, *args: object) -> None:
    """Log a line now (``lines`` None) or keep it in ``lines``."""
    if lines is None:
        logger.log(level, message, *args, stacklevel=2)
    else:
        lines.append((level, message, args))


def revision_allows(
    cqrs_id: str | None, pk: Any, existing: int, new: int, sync: bool, lines: LogLines | None
) -> bool:
    """Whether revision ``new`` of a SAVE (``sync``: of a SYNC) may replace ``existing``."""
    if sync:
        if existing > new:
            log(
                lines,
                logging.WARNING,
                'CQRS revision downgrade on sync: pk = %s, '
                'cqrs_revision = new %s / existing %s (%s).',
                pk,
                new,
                existing,
                cqrs_id,
            )
    else:
        if existing > new:
            log(
                lines,
                logging.ERROR,
                'Wrong CQRS sync order: pk = %s, cqrs_revision = new %s / existing %s (%s).',
                pk,
                new,
                existing,
                cqrs_id,
            )
            return False
        if existing == new:
            log(
                lines,
                logging.ERROR,
                'Received duplicate CQRS data: pk = %s, cqrs_revision = %s (%s).',
                pk,
                new,
                cqrs_id,
            )
            if new == 0:
                log(
                    lines,
                    logging.WARNING,
                    'CQRS potential creation race condition: pk = %s (%s).',
                    pk,
                    cqrs_id,
                )
            return False
        if new != existing + 1:
            log(
                lines,
                logging.WARNING,
                'Lost or filtered out %s CQRS packages: pk = %s, cqrs_revision = %s (%s)',
                new - existing - 1,
                pk,
                new,
                cqrs_id,
            )
    return True
