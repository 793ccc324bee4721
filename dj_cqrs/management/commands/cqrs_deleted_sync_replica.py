"""``cqrs_deleted_sync_replica``: delete the replica rows the master deleted (step 3)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dj_cqrs.management.diff import delete_pks, json_lines, read_header
from dj_cqrs.management.utils import input_lines, replica_model


class Command(BaseCommand):
    help = 'Removes the replica rows that cqrs_deleted_diff_master reports (reads stdin).'
    stealth_options = ('stdin',)

    def handle(self, *args: object, **options: Any) -> None:
        lines = input_lines(options)
        head = read_header(lines)
        model = replica_model(head.cqrs_id)
        for pks in json_lines(lines):
            delete_pks(model, pks, self._write_err)

    def _write_err(self, text: str) -> None:
        self.stderr.write(text, ending='')
