"""``cqrs_diff_master``: stream ``[[pk, revision], ...]`` of master rows (diff step 1)."""

from __future__ import annotations

from typing import Any, cast

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs import wire
from dj_cqrs.management.diff import header, master_revisions
from dj_cqrs.management.utils import (
    DEFAULT_BATCH_SIZE,
    filtered_queryset,
    master_model,
    positive_int,
)


class Command(BaseCommand):
    help = 'Diff of a CQRS model: the master side (pipe into cqrs_diff_replica).'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument('--cqrs-id', '-cid', required=True, help='CQRS_ID of the master model')
        parser.add_argument('--filter', '-f', default=None, help='JSON object of filter kwargs')
        parser.add_argument(
            '--batch', '-b', type=positive_int, default=DEFAULT_BATCH_SIZE, help='Batch size'
        )

    def handle(self, *args: object, **options: Any) -> None:
        model = master_model(options['cqrs_id'])
        queryset = filtered_queryset(model._default_manager.all(), options['filter'])
        if not queryset.exists():
            self.stderr.write('No objects found for filter!')
            return
        self.stdout.write(header(cast(str, model.CQRS_ID)))
        for pairs in master_revisions(model, queryset, options['batch']):
            self.stdout.write(wire.dumps(pairs))
