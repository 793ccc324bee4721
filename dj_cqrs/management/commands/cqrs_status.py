"""``cqrs_status``: queue, dead letters, outbox and replication lag of this service.

Exit status: 0 healthy; 1 when a threshold given on the command line is exceeded (one line per
problem on stderr); 2 when the broker cannot be reached. Usable as a health check::

    manage.py cqrs_status --max-lag 60 --max-dead-letters 0
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs.observability import render
from dj_cqrs.observability import status as observability

_Number = TypeVar('_Number', int, float)


def _non_negative(kind: type[_Number]) -> Callable[[str], _Number]:
    def parse(text: str) -> _Number:
        from argparse import ArgumentTypeError

        try:
            value = kind(text)
        except ValueError:
            raise ArgumentTypeError(f'{text!r} is not a number') from None
        if value < 0:
            raise ArgumentTypeError(f'{text!r} must be >= 0')
        return value

    return parse


class Command(BaseCommand):
    help = 'Show queue depth, dead letters, outbox backlog and replication lag of this service.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument('--json', action='store_true', help='Print JSON instead of a table')
        parser.add_argument(
            '--max-lag',
            type=_non_negative(float),
            metavar='SECONDS',
            help='Unhealthy (exit 1) when the replica is further behind than this',
        )
        parser.add_argument(
            '--max-queue',
            type=_non_negative(int),
            metavar='N',
            help='Unhealthy when more than N messages wait in the queue',
        )
        parser.add_argument(
            '--max-dead-letters',
            type=_non_negative(int),
            metavar='N',
            help='Unhealthy when more than N messages are in the dead-letter queue',
        )
        parser.add_argument(
            '--max-outbox-age',
            type=_non_negative(float),
            metavar='SECONDS',
            help='Unhealthy when the oldest outbox message is older than this',
        )

    def handle(self, *args: object, **options: Any) -> None:
        status = observability.collect()
        problems = observability.problems(
            status,
            max_lag=options['max_lag'],
            max_queue=options['max_queue'],
            max_dead_letters=options['max_dead_letters'],
            max_outbox_age=options['max_outbox_age'],
        )
        if options['json']:
            data = status.to_dict()
            data['problems'] = problems
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.stdout.write(render.render(status))
        for problem in problems:
            self.stderr.write(f'cqrs_status: {problem}')
        if status.broker_error:
            self.stderr.write(
                f'cqrs_status: cannot reach the broker at {status.broker}: {status.broker_error}'
            )
            sys.exit(2)
        if problems:
            sys.exit(1)
