"""``manage.py cqrs_dead_letters dump|retry|purge``: this service's dead-letter queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dj_cqrs.exceptions import TransportError

if TYPE_CHECKING:
    from dj_cqrs.protocols import TransportClass


class Command(BaseCommand):
    help = 'CQRS dead letters queue management commands'

    def add_arguments(self, parser: CommandParser) -> None:
        command = parser.add_subparsers(
            title='Command', description='Command to execute', dest='command', required=True
        )
        command.add_parser('retry', help='Retry all dead letters.')
        command.add_parser('dump', help='Dumps all dead letter to stdout.')
        command.add_parser('purge', help='Removes all dead letters.')

    def handle(self, *args: Any, **options: Any) -> None:
        from dj_cqrs.transport import get_transport

        transport = get_transport()
        if not transport.supports_dead_letters:
            raise CommandError(
                'Dead letters commands available only for RabbitMQTransport and KombuTransport.'
            )
        try:
            getattr(self, options['command'])(transport)
        except TransportError as err:
            raise CommandError(str(err))

    def dump(self, transport: TransportClass) -> None:
        for body in transport.dead_letters_dump():
            self.stdout.write(_text(body))

    def retry(self, transport: TransportClass) -> None:
        self.stdout.write(f'Total dead letters: {transport.dead_letters_count()}')

        def report(index: int, total: int, body: bytes) -> None:
            self.stdout.write(f'Retrying: {index}/{total}')
            self.stdout.write(_text(body))

        transport.dead_letters_retry(report)

    def purge(self, transport: TransportClass) -> None:
        count = transport.dead_letters_count()
        self.stdout.write(f'Total dead letters: {count}')
        if count:
            transport.dead_letters_purge()
            self.stdout.write('Purged')


def _text(body: bytes | str) -> str:
    return body.decode('utf-8', 'replace') if isinstance(body, bytes) else body
