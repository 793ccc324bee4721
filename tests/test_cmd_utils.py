"""Helpers of the commands: keyset paging (``batch_qs``) and the progress line."""

from __future__ import annotations

import pytest

from dj_cqrs.management.progress import Progress, progress_line
from dj_cqrs.management.utils import batch_qs, chunked, keyset_batches
from tests.dj_master.models import CustomPK, GoldenParent


@pytest.mark.django_db
def test_batch_qs_pages_by_pk_without_offset():
    """``batch_qs`` yields every row once in pk order, each batch one ``pk > last`` query."""
    for pk in (9, 3, 7, 1, 5):
        GoldenParent.objects.create(id=pk, name='p')
    batches = list(batch_qs(GoldenParent.objects.order_by('-name'), batch_size=2))
    assert [[row.pk for row in batch] for batch in batches] == [[1, 3], [5, 7], [9]]


@pytest.mark.django_db
def test_keyset_paging_is_stable_while_rows_change():
    """Rows inserted below the cursor or deleted ahead never cause skips or repeats."""
    for pk in range(10, 70, 10):
        GoldenParent.objects.create(id=pk, name='p')
    seen = []
    for batch in keyset_batches(GoldenParent.objects.all(), 2):
        seen.extend(row.pk for row in batch)
        if len(seen) == 2:
            GoldenParent.objects.create(id=5, name='below the cursor')
            GoldenParent.objects.filter(id=30).delete()
    assert seen == [10, 20, 40, 50, 60]


@pytest.mark.django_db
def test_keyset_paging_with_a_char_pk_and_values_rows():
    """Any pk name works; value rows give their pk through ``key``."""
    for code in ('b', 'a', 'c'):
        CustomPK.objects.create(code=code, name=code)
    rows = CustomPK.objects.values_list('code', 'name')
    batches = list(keyset_batches(rows, 2, key=lambda row: row[0]))
    assert batches == [[('a', 'a'), ('b', 'b')], [('c', 'c')]]


def test_batch_size_must_be_positive():
    """A zero batch is refused (the original asserted)."""
    with pytest.raises(ValueError, match='positive'):
        next(keyset_batches(GoldenParent.objects.none(), 0))


def test_progress_line_format():
    """The original's progress text: percent truncated, rate with one decimal, H:MM:SS left."""
    assert progress_line(1, 3, 0.5) == (
        '\r1 of 3 processed - 33% with rate 2.0 rps, to go 0:00:01 ...' + ' ' * 20
    )
    assert progress_line(2, 3, 0.0).startswith('\r2 of 3 processed - 66% with rate 0.0 rps')
    assert progress_line(7200, 10800, 1.0).endswith('to go 0:00:00 ...' + ' ' * 20)


def test_progress_writes_only_when_enabled():
    """Progress lines are written per batch when enabled, never otherwise."""
    written = []
    Progress(4, written.append, enabled=False).advance(2)
    assert written == []
    tracker = Progress(4, written.append)
    tracker.advance(2)
    tracker.advance(2)
    assert [line.split(' processed')[0] for line in written] == ['\r2 of 4', '\r4 of 4']


def test_chunked_splits_long_in_lists():
    """``pk__in`` values are split under the SQLite parameter limit."""
    assert [len(part) for part in chunked(list(range(2000)))] == [900, 900, 200]
