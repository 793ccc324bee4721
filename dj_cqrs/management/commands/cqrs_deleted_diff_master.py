"""``cqrs_deleted_diff_master``: pks the master no longer has (deleted-rows step 2)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dj_cqrs import wire
from dj_cqrs.management.diff import pks_missing, read_stream
from dj_cqrs.management.utils import master_model


class Command(BaseCommand):
    help = 'Diff of deleted rows of a CQRS model: the master side (reads stdin).'
    stealth_options = ('stdin',)

    def handle(self, *args: object, **options: Any) -> None:
        header, _, model, lines = read_stream(options, master_model)
        self.stdout.write(header)
        for pks in lines:
            missing = pks_missing(model, pks)
            if missing:
                self.stdout.write(wire.dumps(missing))
                self.stderr.write(f'PK to delete: {missing!r}')
