"""``cqrs_bulk_dump``: write every row of a master model to a dump file (or stdout)."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import IO, Any, cast

from django.core.management.base import BaseCommand, CommandError

from dj_cqrs.management.bulk import dump
from dj_cqrs.management.utils import add_batch_argument, master_model, raw_writer


class Command(BaseCommand):
    help = 'Bulk dump of a CQRS model from the master service.'

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument('--cqrs-id', '-c', required=True, help='CQRS_ID of the master model')
        parser.add_argument(
            '--output', '-o', default=None, help='Output file (default <cqrs_id>.dump, - = stdout)'
        )
        add_batch_argument(parser)
        parser.add_argument('--progress', '-p', action='store_true', help='Show progress')
        parser.add_argument('--force', '-f', action='store_true', help='Overwrite the file')

    def handle(self, *args: Any, **options: Any) -> None:
        cqrs_id = options['cqrs_id']
        model = master_model(cqrs_id)
        name = options['output'] or f'{cqrs_id}.dump'
        kwargs = {
            'batch_size': options['batch'],
            'progress': options['progress'],
            'write_err': raw_writer(self.stderr),
        }
        if name == '-':
            stdout = SimpleNamespace(write=raw_writer(self.stdout))
            result = dump(model, cast(IO[str], stdout), **kwargs)
        else:
            if os.path.exists(name) and not options['force']:
                raise CommandError(f'File {name} exists!')
            # Written aside and renamed at the end: a failed run leaves no half file behind.
            partial = f'{name}.partial-{os.getpid()}'
            try:
                with open(partial, 'w', encoding='utf-8') as out:
                    result = dump(model, out, **kwargs)
                os.replace(partial, name)
            except OSError as err:
                raise CommandError(f"File {name} can't be written! {err}")
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
        self.stderr.write(
            f'Done!\n{result.saved} instance(s) saved.\n{result.processed} instance(s) processed.'
        )
