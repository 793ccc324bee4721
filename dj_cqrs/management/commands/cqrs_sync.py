"""``cqrs_sync``: re-send master rows as SYNC messages (to all replicas or one queue)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs.management.sync import done_lines, sync_queryset
from dj_cqrs.management.utils import (
    DEFAULT_BATCH_SIZE,
    filtered_queryset,
    master_model,
    positive_int,
)


class Command(BaseCommand):
    help = 'Filter synchronization of a CQRS model.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument('--cqrs-id', '-cid', required=True, help='CQRS_ID of the master model')
        parser.add_argument(
            '--filter', '-f', default=None, help='JSON object of queryset filter kwargs ({} = all)'
        )
        parser.add_argument('--queue', '-q', default=None, help='Replica queue to sync to')
        parser.add_argument(
            '--batch', '-b', type=positive_int, default=DEFAULT_BATCH_SIZE, help='Batch size'
        )
        parser.add_argument('--progress', '-p', action='store_true', help='Show progress')

    def handle(self, *args: object, **options: Any) -> None:
        model = master_model(options['cqrs_id'])
        if options['filter'] is None:
            # The original's rule: no filter selects nothing ('{}' selects every row).
            self.stdout.write('No objects found for filter!')
            return
        queryset = filtered_queryset(model._default_manager.all(), options['filter'])
        if not queryset.exists():
            self.stdout.write('No objects found for filter!')
            return
        result = sync_queryset(
            model,
            queryset,
            queue=options['queue'],
            batch_size=options['batch'],
            progress=options['progress'],
            write=self._write,
        )
        self.stdout.write(done_lines(result))

    def _write(self, text: str) -> None:
        self.stdout.write(text, ending='')
        self.stdout.flush()
