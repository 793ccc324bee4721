"""``cqrs_diff_sync``: re-send the rows ``cqrs_diff_replica`` found (diff step 3)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs.management.diff import json_lines, normalized_pks, read_header
from dj_cqrs.management.sync import done_lines, sync_pks
from dj_cqrs.management.utils import DEFAULT_BATCH_SIZE, input_lines, master_model, positive_int


class Command(BaseCommand):
    help = 'Diff synchronizer of a CQRS model (reads cqrs_diff_replica from stdin).'
    stealth_options = ('stdin',)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            '--batch', '-b', type=positive_int, default=DEFAULT_BATCH_SIZE, help='Batch size'
        )
        parser.add_argument('--progress', '-p', action='store_true', help='Show progress')

    def handle(self, *args: object, **options: Any) -> None:
        lines = input_lines(options)
        head = read_header(lines)
        model = master_model(head.cqrs_id)
        for pks in json_lines(lines):
            result = sync_pks(
                model,
                normalized_pks(model, pks),
                queue=head.queue,
                batch_size=options['batch'],
                progress=options['progress'],
                write=self._write,
            )
            if result is None:
                self.stdout.write('No objects found for filter!')
            else:
                self.stdout.write(done_lines(result))

    def _write(self, text: str) -> None:
        self.stdout.write(text, ending='')
        self.stdout.flush()
