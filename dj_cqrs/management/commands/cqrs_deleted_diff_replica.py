"""``cqrs_deleted_diff_replica``: stream the replica's pks (deleted-rows step 1)."""

from __future__ import annotations

from typing import Any, cast

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs import wire
from dj_cqrs.management.diff import header, replica_pks
from dj_cqrs.management.utils import (
    DEFAULT_BATCH_SIZE,
    filtered_queryset,
    positive_int,
    replica_model,
)


class Command(BaseCommand):
    help = 'Diff of deleted rows of a CQRS model: the replica side.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument('--cqrs-id', '-cid', required=True, help='CQRS_ID of the replica model')
        parser.add_argument('--filter', '-f', default=None, help='JSON object of filter kwargs')
        parser.add_argument(
            '--batch', '-b', type=positive_int, default=DEFAULT_BATCH_SIZE, help='Batch size'
        )

    def handle(self, *args: object, **options: Any) -> None:
        model = replica_model(options['cqrs_id'])
        queryset = filtered_queryset(model._default_manager.all(), options['filter'])
        if not queryset.exists():
            self.stderr.write('No objects found for filter!')
            return
        self.stdout.write(header(cast(str, model.CQRS_ID)))
        for pks in replica_pks(queryset, options['batch']):
            self.stdout.write(wire.dumps(pks))
