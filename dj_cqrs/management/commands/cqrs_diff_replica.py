"""``cqrs_diff_replica``: pks the replica lacks or holds at another revision (diff step 2)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dj_cqrs import wire
from dj_cqrs.conf import get_settings
from dj_cqrs.management.diff import pks_to_resync, read_stream
from dj_cqrs.management.utils import replica_model


class Command(BaseCommand):
    help = 'Diff of a CQRS model: the replica side (reads cqrs_diff_master from stdin).'
    stealth_options = ('stdin',)

    def handle(self, *args: object, **options: Any) -> None:
        header, _, model, lines = read_stream(options, replica_model)
        self.stdout.write(f'{header},{get_settings().queue}')
        for pairs in lines:
            pks = pks_to_resync(model, pairs)
            if pks:
                self.stdout.write(wire.dumps(pks))
                # The original prints a set: ``{1, 3}`` (here in the stream's order).
                self.stderr.write('PK to resync: {' + ', '.join(map(repr, pks)) + '}')
