"""``cqrs_diff_replica``: pks the replica lacks or holds at another revision (diff step 2)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dj_cqrs import wire
from dj_cqrs.conf import get_settings
from dj_cqrs.management.diff import json_lines, pks_to_resync, read_header, set_repr
from dj_cqrs.management.utils import input_lines, replica_model


class Command(BaseCommand):
    help = 'Diff of a CQRS model: the replica side (reads cqrs_diff_master from stdin).'
    stealth_options = ('stdin',)

    def handle(self, *args: object, **options: Any) -> None:
        lines = input_lines(options)
        head = read_header(lines)
        model = replica_model(head.cqrs_id)
        self.stdout.write(f'{head.line},{get_settings().queue}')
        for pairs in json_lines(lines):
            pks = pks_to_resync(model, pairs)
            if pks:
                self.stdout.write(wire.dumps(pks))
                self.stderr.write(f'PK to resync: {set_repr(pks)}')
