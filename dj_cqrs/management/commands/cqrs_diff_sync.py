"""``cqrs_diff_sync``: re-send the rows ``cqrs_diff_replica`` found (diff step 3)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs.management.diff import normalized_pks, read_stream
from dj_cqrs.management.sync import done_lines, sync_queryset
from dj_cqrs.management.utils import add_batch_argument, master_model, raw_writer


class Command(BaseCommand):
    help = 'Diff synchronizer of a CQRS model (reads cqrs_diff_replica from stdin).'
    stealth_options = ('stdin',)

    def add_arguments(self, parser: CommandParser) -> None:
        add_batch_argument(parser)
        parser.add_argument('--progress', '-p', action='store_true', help='Show progress')

    def handle(self, *args: object, **options: Any) -> None:
        _, queue, model, lines = read_stream(options, master_model)
        for pks in lines:
            result = sync_queryset(
                model._default_manager.filter(pk__in=normalized_pks(model, pks)),
                queue=queue,
                batch_size=options['batch'],
                progress=options['progress'],
                write=raw_writer(self.stdout),
            )
            self.stdout.write(done_lines(result))
