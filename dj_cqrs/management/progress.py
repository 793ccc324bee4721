"""The progress line the original's commands print (same text, same ``\\r`` rules)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta


def progress_line(done: int, total: int, elapsed: float) -> str:
    """The line, with 20 spaces at the end to overwrite a longer previous line."""
    percent = int(done * 100 / total) if total else 100
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else 0.0
    to_go = timedelta(seconds=int(max(left, 0)))
    return (
        f'\r{done} of {total} processed - {percent}% with rate {rate:.1f} rps, '
        f'to go {to_go} ...' + ' ' * 20
    )


class Progress:
    """Writes a progress line after each batch when enabled."""

    def __init__(self, total: int, write: Callable[[str], None], enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self._write = write
        self._enabled = enabled
        self._started = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        if self._enabled:
            self._write(progress_line(self.done, self.total, time.monotonic() - self._started))
