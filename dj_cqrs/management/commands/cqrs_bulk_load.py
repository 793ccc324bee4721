"""``cqrs_bulk_load``: load a dump file (or stdin) into a replica model."""

from __future__ import annotations

import os
from argparse import ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from dj_cqrs.management.bulk_load import clear, load
from dj_cqrs.management.utils import (
    add_batch_argument,
    boolean,
    input_lines,
    raw_writer,
    replica_model,
)


class Command(BaseCommand):
    help = 'Bulk load of a CQRS model to a replica service.'
    stealth_options = ('stdin',)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument('--input', '-i', required=True, help='Dump file (- = stdin)')
        parser.add_argument(
            '--clear',
            '-c',
            type=boolean,
            nargs='?',
            const=True,
            default=False,
            help='Delete the existing rows first (--clear, or --clear=true/false)',
        )
        add_batch_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        name = options['input']
        if name == '-':
            self._load(name, input_lines(options), options)
            return
        if not os.path.isfile(name):
            raise CommandError(f"File {name} doesn't exist!")
        with open(name, encoding='utf-8') as stream:
            self._load(name, iter(stream), options)

    def _load(self, name: str, lines: Any, options: dict[str, Any]) -> None:
        first = next(lines, '').strip()
        if not first:
            raise CommandError(f'File {name} is empty!')
        model = replica_model(first)
        try:
            # call_command(clear='false') skips the parser's conversion: convert here too.
            wanted = boolean(options['clear'])
        except ArgumentTypeError as err:
            raise CommandError(str(err))
        if wanted:
            try:
                clear(model)
            except DatabaseError:
                raise CommandError('Delete operation fails!')
        result = load(model, lines, batch_size=options['batch'], write_err=raw_writer(self.stderr))
        self.stderr.write(f'Done!\n{result.loaded} instance(s) loaded.')
