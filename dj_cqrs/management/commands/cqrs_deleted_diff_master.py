"""``cqrs_deleted_diff_master``: pks the master no longer has (deleted-rows step 2)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dj_cqrs import wire
from dj_cqrs.management.diff import json_lines, pks_missing, read_header
from dj_cqrs.management.utils import input_lines, master_model


class Command(BaseCommand):
    help = 'Diff of deleted rows of a CQRS model: the master side (reads stdin).'
    stealth_options = ('stdin',)

    def handle(self, *args: object, **options: Any) -> None:
        lines = input_lines(options)
        head = read_header(lines)
        model = master_model(head.cqrs_id)
        self.stdout.write(head.line)
        for pks in json_lines(lines):
            missing = pks_missing(model, pks)
            if missing:
                self.stdout.write(wire.dumps(missing))
                self.stderr.write(f'PK to delete: {missing!r}')
