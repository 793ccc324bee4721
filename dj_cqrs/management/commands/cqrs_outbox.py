"""``cqrs_outbox``: send the messages kept in the outbox, or show the backlog.

``relay`` runs until SIGTERM/SIGINT (``--once``: until nothing due is left, exit 1 if a publish
failed). Several relays may run at once.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dj_cqrs.management.utils import number
from dj_cqrs.outbox import relaying as outbox_relay


class Command(BaseCommand):
    help = 'Relay the messages kept in the CQRS outbox to the broker, or show the backlog.'

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument('action', choices=('relay', 'status'))
        parser.add_argument(
            '--once', action='store_true', help='Stop when nothing due is left (relay)'
        )
        parser.add_argument(
            '--batch',
            type=number(int, zero=False),
            default=outbox_relay.DEFAULT_BATCH,
            metavar='N',
            help=f'Messages per transaction (default {outbox_relay.DEFAULT_BATCH})',
        )
        parser.add_argument(
            '--interval',
            type=number(float, zero=False),
            default=1.0,
            metavar='SECONDS',
            help='Pause when the outbox is empty or the broker failed (default 1)',
        )
        parser.add_argument('--database', default=None, metavar='ALIAS', help='Outbox database')

    def handle(self, *args: object, **options: Any) -> None:
        if options['action'] == 'status':
            self._status(options['database'])
            return
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
        total = outbox_relay.relay(
            batch=options['batch'],
            interval=options['interval'],
            using=options['database'],
            once=options['once'],
            stop=stop,
            report=lambda r: self.stdout.write(f'Sent {r.sent}, failed {r.failed}.'),
        )
        self.stdout.write(f'Relayed {total.sent} message(s), {total.failed} failed attempt(s).')
        if options['once'] and total.failed:
            raise CommandError('The broker did not accept every message; they stay in the outbox.')

    def _status(self, using: str | None) -> None:
        backlog = outbox_relay.status(using)
        oldest = backlog['oldest'].isoformat() if backlog['oldest'] else '-'
        self.stdout.write(f'Messages: {backlog["count"]} (due now: {backlog["due"]})')
        self.stdout.write(f'Oldest: {oldest}')
        self.stdout.write(f'Most attempts: {backlog["max_attempts"]}')
        if backlog['last_error']:
            self.stdout.write(f'Last error: {backlog["last_error"]}')
        for cqrs_id, count in backlog['by_cqrs_id'].items():
            self.stdout.write(f'{cqrs_id}: {count}')
