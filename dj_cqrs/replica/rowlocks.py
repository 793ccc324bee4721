"""Row locks of the tombstones: DELETE and create of one replica row, one worker at a time.

A lock on (cqrs_id, pk) is held until the transaction that took it ends: on PostgreSQL a
``pg_advisory_xact_lock``; on MariaDB/MySQL a ``GET_LOCK`` named lock, which belongs to the
session, so it is released on commit and, after a rollback, by :func:`release_ended`; none
elsewhere (SQLite has one writer anyway). Rows are locked in key order: no crosswise waits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError, OperationalError

from dj_cqrs.constants import DB_VENDOR_MYSQL, DB_VENDOR_PG

_MYSQL_NAMES_PER_STATEMENT = 100


def key(cqrs_id: str, pk_text: str) -> int:
    """The lock key of one row: a signed 64-bit hash of (cqrs_id, pk as text)."""
    digest = hashlib.blake2b(f'{cqrs_id}\x00{pk_text}'.encode(), digest_size=8)
    return int.from_bytes(digest.digest(), 'big', signed=True)


def lock(connection: Any, cqrs_id: str, pk_texts: Iterable[str]) -> bool:
    """Lock rows ``pk_texts`` of ``cqrs_id`` until the current transaction of ``connection`` ends.

    Returns whether locks were taken (False outside a transaction or on a database without them).
    """
    if not connection.in_atomic_block:
        return False
    keys = sorted({key(cqrs_id, pk) for pk in pk_texts})
    if connection.vendor == DB_VENDOR_PG:
        with connection.cursor() as cursor:
            if len(keys) == 1:
                cursor.execute('SELECT pg_advisory_xact_lock(%s)', keys)
            else:
                cursor.execute(
                    'SELECT count(pg_advisory_xact_lock(k)) '
                    'FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS keys',
                    [keys],
                )
        return True
    if connection.vendor == DB_VENDOR_MYSQL:
        _NamedLocks.of(connection).take([f'dj_cqrs.row.{k & (2**64 - 1):016x}' for k in keys])
        return True
    return False


def release_ended(connection: Any) -> None:
    """Release the named locks (MariaDB/MySQL) of a transaction that has ended (rolled back)."""
    held = getattr(connection, '_cqrs_named_locks', None)
    if held is not None and held.names and not held.pending():
        held.release()


class _NamedLocks:
    """The named locks one connection holds for its current transaction.

    The instance is registered as an on-commit callback outside every savepoint (so a savepoint
    rolled back keeps it): its absence from the pending callbacks means the transaction ended.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.names: list[str] = []
        self.session: Any = None

    @classmethod
    def of(cls, connection: Any) -> _NamedLocks:
        release_ended(connection)
        held = getattr(connection, '_cqrs_named_locks', None)
        if held is None:
            held = connection._cqrs_named_locks = cls(connection)
        return held

    def pending(self) -> bool:
        connection = self.connection
        if self.session is not connection.connection:
            self.names = []  # reconnected: the server released the old session's locks
            return False
        return any(entry[1] is self for entry in connection.run_on_commit)

    def __call__(self) -> None:  # on commit
        self.release()

    def take(self, names: list[str]) -> None:
        connection = self.connection
        wanted = [name for name in names if name not in self.names]
        if not wanted:
            return
        if not self.names:
            self.session = connection.connection
            # Outside every savepoint: only the end of the whole transaction drops it.
            connection.run_on_commit.append((set(), self, False))
        for start in range(0, len(wanted), _MYSQL_NAMES_PER_STATEMENT):
            chunk = wanted[start : start + _MYSQL_NAMES_PER_STATEMENT]
            calls = ', '.join(['GET_LOCK(%s, @@innodb_lock_wait_timeout)'] * len(chunk))
            with connection.cursor() as cursor:
                cursor.execute(f'SELECT {calls}', chunk)
                results = cursor.fetchone()
            self.names.extend(name for name, got in zip(chunk, results, strict=True) if got == 1)
            if any(got != 1 for got in results):
                raise OperationalError(
                    f'Lock wait timeout exceeded on the row locks of the tombstones '
                    f'({chunk[0]}...; GET_LOCK): the message is retried'
                )

    def release(self) -> None:
        names, self.names = self.names, []
        connection = self.connection
        if not names or self.session is not connection.connection:
            return
        calls = ', '.join(['RELEASE_LOCK(%s)'] * len(names))
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'SELECT {calls}', names)
        except DatabaseError:
            # The session is gone or broken: the server releases its named locks itself.
            self.session = None
