"""Run the test project's commands as real ``manage.py`` subprocesses on a SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAME_ON_EVERY_DB = os.environ.get('DB') in ('postgres', 'mariadb', 'mysql')
"""The subprocesses always use their own SQLite file: the PostgreSQL and MariaDB passes need
not repeat them."""

SCRIPTS = {'master': HERE / 'manage_master.py', 'replica': HERE / 'manage_replica.py'}


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def _result(proc: subprocess.CompletedProcess) -> Result:
    """Decoded output, byte for byte (no newline translation: progress lines use ``\\r``)."""
    return Result(proc.returncode, proc.stdout.decode('utf-8'), proc.stderr.decode('utf-8'))


class Project:
    """The test project on one database file; ``master``/``replica`` pick the script name."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.db = workdir / 'db.sqlite3'

    def env(self) -> dict[str, str]:
        env = {**os.environ, 'CQRS_CMD_DB': str(self.db), 'PYTHONPATH': str(ROOT)}
        env.pop('DJANGO_SETTINGS_MODULE', None)
        env.pop('DB', None)
        return env

    def command(self, side: str, *args: str) -> list[str]:
        return [sys.executable, str(SCRIPTS[side]), *args]

    def run(
        self, side: str, *args: str, stdin: str | None = None, cwd: Path | None = None
    ) -> Result:
        proc = subprocess.run(
            self.command(side, *args),
            input=None if stdin is None else stdin.encode('utf-8'),
            capture_output=True,
            env=self.env(),
            cwd=cwd or self.workdir,
            timeout=120,
        )
        return _result(proc)

    def run_many(self, calls: Iterable[tuple[str, tuple[str, ...], str | None]]) -> list[Result]:
        """Independent calls ``(side, args, stdin)`` run side by side (they only read)."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [
                pool.submit(self.run, side, *args, stdin=stdin) for side, args, stdin in calls
            ]
            return [future.result() for future in futures]

    def pipe(self, *stages: tuple[str, tuple[str, ...]]) -> Result:
        """``stage1 | stage2 | ...`` through a real shell pipe."""
        import shlex

        line = ' | '.join(shlex.join(self.command(side, *args)) for side, args in stages)
        proc = subprocess.run(
            ['bash', '-o', 'pipefail', '-c', line],
            capture_output=True,
            env=self.env(),
            cwd=self.workdir,
            timeout=120,
        )
        return _result(proc)

    def migrate(self) -> None:
        result = self.run('master', 'migrate', '--run-syncdb', '-v', '0')
        assert result.returncode == 0, result.stderr

    def shell(self, code: str) -> str:
        result = self.run('master', 'shell', '-c', code)
        assert result.returncode == 0, result.stderr
        return result.stdout
