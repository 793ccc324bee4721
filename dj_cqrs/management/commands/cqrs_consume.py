"""``manage.py cqrs_consume``: run supervised consumer workers for this replica service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dj_cqrs.management.utils import replica_model


class Command(BaseCommand):
    help = 'Starts CQRS worker, which consumes messages from message queue.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument('--workers', '-w', help='Number of workers', type=int, default=1)
        parser.add_argument(
            '--cqrs-id', '-cid', nargs='*', help='Choose model(s) by CQRS_ID for consuming'
        )
        parser.add_argument(
            '--reload', '-r', help='Enable reload signal SIGHUP', action='store_true'
        )
        parser.add_argument(
            '--ignore-paths',
            nargs='?',
            type=lambda value: [Path(p).resolve() for p in value.split(',') if p],
            help='Files or directories to ignore when reloading (comma separated)',
        )
        parser.add_argument(
            '--sigint-timeout',
            nargs='?',
            type=int,
            default=5,
            help='How long to wait for the worker to exit after SIGINT before SIGKILL',
        )
        parser.add_argument(
            '--sigkill-timeout',
            nargs='?',
            type=int,
            default=1,
            help='How long to wait for the worker to exit after SIGKILL before giving up',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from dj_cqrs.consumer.workers import WorkersManager

        consume_kwargs: dict[str, Any] = {}
        if options.get('cqrs_id'):
            for cqrs_id in options['cqrs_id']:
                replica_model(cqrs_id)
            consume_kwargs['cqrs_ids'] = set(options['cqrs_id'])
        if options['reload']:
            try:
                import watchfiles  # noqa: F401
            except ImportError:
                raise CommandError(
                    '--reload needs the watchfiles package: pip install watchfiles '
                    '(or pip install django-cqrs-ng[reload]).'
                )
        if options['workers'] < 1:
            raise CommandError('--workers must be 1 or more.')
        WorkersManager(
            consume_kwargs=consume_kwargs,
            workers=options['workers'],
            reload=options['reload'],
            ignore_paths=options.get('ignore_paths') or (),
            sigint_timeout=(
                options['sigint_timeout'] if options['sigint_timeout'] is not None else 5
            ),
            sigkill_timeout=(
                options['sigkill_timeout'] if options['sigkill_timeout'] is not None else 1
            ),
        ).run()
