"""``cqrs_prune_tombstones``: forget replica deletes older than ``CQRS_TOMBSTONE_TTL``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs.replica import tombstones


class Command(BaseCommand):
    help = 'Delete replica tombstones older than CQRS_TOMBSTONE_TTL (or --older-than seconds).'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            '--older-than',
            type=float,
            default=None,
            metavar='SECONDS',
            help="Age limit (default: CQRS['replica']['CQRS_TOMBSTONE_TTL'])",
        )
        parser.add_argument('--database', default=None, metavar='ALIAS')

    def handle(self, *args: object, **options: Any) -> None:
        deleted = tombstones.prune(options['older_than'], using=options['database'])
        self.stdout.write(f'{deleted} tombstone(s) deleted.')
