"""``cqrs_deleted_sync_replica``: delete the replica rows the master deleted (step 3)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dj_cqrs.management.diff import delete_pks, read_stream
from dj_cqrs.management.utils import raw_writer, replica_model


class Command(BaseCommand):
    help = 'Removes the replica rows that cqrs_deleted_diff_master reports (reads stdin).'
    stealth_options = ('stdin',)

    def handle(self, *args: object, **options: Any) -> None:
        *_, model, lines = read_stream(options, replica_model)
        for pks in lines:
            delete_pks(model, pks, raw_writer(self.stderr))
