"""``cqrs_status``: queue, dead letters, outbox and replication lag of this service.

Exit status: 0 healthy; 1 when a threshold given on the command line is exceeded (one line per
problem on stderr); 2 when the broker cannot be reached (docs/operations.md: health check).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs.management.utils import number
from dj_cqrs.observability import status as observability

# (option, type, help); the metavar of a float is SECONDS, of an int N.
_THRESHOLDS = (
    ('max_lag', float, 'Unhealthy (exit 1) when the replica is further behind than this'),
    ('max_queue', int, 'Unhealthy when more than N messages wait in the queue'),
    ('max_dead_letters', int, 'Unhealthy when more than N messages are in the dead-letter queue'),
    ('max_outbox_age', float, 'Unhealthy when the oldest outbox message is older than this'),
)


class Command(BaseCommand):
    help = 'Show queue depth, dead letters, outbox backlog and replication lag of this service.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument('--json', action='store_true', help='Print JSON instead of a table')
        for name, kind, text in _THRESHOLDS:
            parser.add_argument(
                '--' + name.replace('_', '-'),
                type=number(kind, zero=True),
                metavar='SECONDS' if kind is float else 'N',
                help=text,
            )

    def handle(self, *args: object, **options: Any) -> None:
        status = observability.collect()
        problems = observability.problems(
            status, **{name: options[name] for name, *_ in _THRESHOLDS}
        )
        if options['json']:
            self.stdout.write(json.dumps({**status.to_dict(), 'problems': problems}, indent=2))
        else:
            self.stdout.write(observability.render(status))
        for problem in problems:
            self.stderr.write(f'cqrs_status: {problem}')
        if status.broker_error:
            self.stderr.write(
                f'cqrs_status: cannot reach the broker at {status.broker}: {status.broker_error}'
            )
            sys.exit(2)
        if problems:
            sys.exit(1)
