"""``cqrs_sync``: re-send master rows as SYNC messages (to all replicas or one queue)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs.management.sync import done_lines, sync_queryset
from dj_cqrs.management.utils import (
    add_batch_argument,
    filtered_queryset,
    master_model,
    raw_writer,
)


class Command(BaseCommand):
    help = 'Filter synchronization of a CQRS model.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument('--cqrs-id', '-cid', required=True, help='CQRS_ID of the master model')
        parser.add_argument(
            '--filter', '-f', default=None, help='JSON object of queryset filter kwargs ({} = all)'
        )
        parser.add_argument('--queue', '-q', default=None, help='Replica queue to sync to')
        add_batch_argument(parser)
        parser.add_argument('--progress', '-p', action='store_true', help='Show progress')

    def handle(self, *args: object, **options: Any) -> None:
        model = master_model(options['cqrs_id'])
        if options['filter'] is None:
            # The original's rule: no filter selects nothing ('{}' selects every row).
            self.stdout.write(done_lines(None))
            return
        result = sync_queryset(
            filtered_queryset(model._default_manager.all(), options['filter']),
            queue=options['queue'],
            batch_size=options['batch'],
            progress=options['progress'],
            write=raw_writer(self.stdout),
        )
        self.stdout.write(done_lines(result))
