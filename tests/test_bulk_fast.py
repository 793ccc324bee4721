"""The fast paths of ``cqrs_bulk_dump`` / ``cqrs_bulk_load`` give what the general paths give."""

from __future__ import annotations

import datetime
import io
import json
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, models
from django.db.models.signals import post_init

from dj_cqrs import wire
from dj_cqrs.management import bulk
from dj_cqrs.management import bulk_load as bulk_load_module
from dj_cqrs.management.bulk import dump, load
from dj_cqrs.master.serialization import to_cqrs_dict
from dj_cqrs.replica import writes
from dj_cqrs.replica.plan import plan_for, pre_save_is_plain
from dj_cqrs.replica.writepath import default_write_path
from dj_cqrs.values import ExactDecimal, exact_decimal, exact_numbers
from tests.dj_master.models import (
    GoldenBasic,
    GoldenFields,
    GoldenParent,
    GoldenSerialized,
    GoldenTime,
)
from tests.dj_replica.models import (
    CustomPKReplica,
    GoldenBasicReplica,
    GoldenParentReplica,
    GoldenTimeReplica,
)

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)


def dumped(model, batch_size=3):
    out, errors = io.StringIO(), []
    result = dump(model, out, batch_size=batch_size, write_err=errors.append)
    assert errors == []
    return out.getvalue(), result


def expected_dump(model):
    """The dump as the general path writes it: ``to_cqrs_dict`` of each instance, in pk order."""
    rows = model._default_manager.order_by('pk')
    return model.CQRS_ID + ''.join('\n' + wire.dumps(to_cqrs_dict(row, sync=True)) for row in rows)


def line(pk, revision=0, name='x'):
    return json.dumps({'id': pk, 'name': name, 'cqrs_revision': revision, 'cqrs_updated': str(NOW)})


def basic_rows(count):
    GoldenParent.objects.create(id=1, name='P')
    for n in range(count):
        GoldenBasic.objects.create(
            char=f'c/ü"{n}',
            text='Line1\nLine2',
            flag=bool(n % 2),
            integer=-n,
            big=9007199254740993 + n,
            amount=Decimal(f'{n}.{n % 10}0'),
            ratio=n / 7,
            day=datetime.date(2024, 2, 29),
            moment=NOW + datetime.timedelta(seconds=n),
            uid=uuid.UUID(int=n),
            payload={'z': n, 'a': [1, 2.5, None, 'é/x'], 'nested': {'k': [True]}},
            optional=None if n % 3 else 'x',
            parent_id=1 if n % 2 else None,
        )


# ------------------------------------------------------------------------------------ dump


def test_plain_model_dump_equals_the_general_path_for_every_field_type():
    """Rows dumped from database values are, byte for byte, what ``to_cqrs_dict`` gives."""
    basic_rows(7)
    text, result = dumped(GoldenBasic)
    assert text == expected_dump(GoldenBasic)
    assert (result.saved, result.processed) == (7, 7)


def test_plain_model_dump_keeps_every_decimal_digit_and_odd_types():
    """Long Decimals, trailing zeros, None, times, durations and bytes are dumped exactly."""
    values = [Decimal('1234567890.12345678901234567890'), Decimal('0.10000000000000000000'), None]
    for n, exact in enumerate(values):
        GoldenTime.objects.create(
            name=f't{n}',
            at=datetime.time(1, 2, 3, 456),
            took=datetime.timedelta(days=1, microseconds=7) if n else None,
            blob=b'\x00\xffbytes' if n else None,
            exact=exact,
        )
    text, _ = dumped(GoldenTime)
    assert text == expected_dump(GoldenTime)
    # SQLite keeps a DecimalField as a REAL: only digits a double holds survive there.
    assert '"exact":0.10000000000000000000' in text


def test_cqrs_fields_model_dump_equals_the_general_path():
    """A model with ``CQRS_FIELDS`` dumps only those fields (plus revisions), as messages do."""
    for n in range(4):
        GoldenFields.objects.create(title=f't{n}', amount=n, secret='s', note='n')
    text, _ = dumped(GoldenFields)
    assert text == expected_dump(GoldenFields)
    assert 'secret' not in text


def test_serializer_model_takes_the_general_path_with_the_same_output():
    """A ``CQRS_SERIALIZER`` model is not dumped from database values: its serializer runs."""
    GoldenParent.objects.create(id=1, name='P')
    for n in range(4):
        GoldenSerialized.objects.create(
            name=f's{n}', price=Decimal('1.500'), happened=NOW, parent_id=1
        )
    assert not bulk._plain_serialization(GoldenSerialized)
    text, _ = dumped(GoldenSerialized)
    assert text == expected_dump(GoldenSerialized)
    assert '"parent_name":"P"' in text


def test_wire_converters_walk_only_fields_that_can_hold_decimals():
    """DecimalFields are wrapped, custom JSON and unknown fields walked, plain values left alone."""
    field = GoldenBasic._meta.get_field
    assert bulk._wire_converter(field('amount'), None, 'sqlite') is exact_decimal
    assert bulk._wire_converter(field('payload'), None, 'sqlite') is None
    decoded = models.JSONField(decoder=json.JSONDecoder)
    assert bulk._wire_converter(decoded, None, 'sqlite') is exact_numbers
    assert bulk._wire_converter(field('char'), None, 'sqlite') is None
    assert bulk._wire_converter(field('parent'), None, 'postgresql') is None
    assert bulk._wire_converter(field('char'), None, 'oracle') is exact_numbers
    assert isinstance(exact_decimal(Decimal('1.10')), ExactDecimal)
    assert exact_decimal(Decimal('NaN')) == 'NaN'
    assert exact_decimal(None) is None


def test_a_row_that_fails_to_serialize_is_reported_and_left_out(monkeypatch):
    """The fast dump reports a failing row with its pk; the counts say what was written."""
    for pk in (1, 2, 3):
        GoldenParent.objects.create(id=pk, name=f'p{pk}')
    real = wire.dumps

    def flaky(data):
        if data['id'] == 2:
            raise ValueError('boom')
        return real(data)

    monkeypatch.setattr(wire, 'dumps', flaky)
    out, errors = io.StringIO(), []
    result = dump(GoldenParent, out, batch_size=2, write_err=errors.append)
    assert errors == ['\nDump record failed for pk=2: ValueError: boom\n']
    assert (result.saved, result.processed) == (2, 3)
    assert [json.loads(row)['id'] for row in out.getvalue().split('\n')[1:]] == [1, 3]


# ------------------------------------------------------------------------------------ load


def test_dump_then_load_gives_equal_rows_and_revisions():
    """Every value and revision of the master arrives in the replica unchanged."""
    basic_rows(25)
    GoldenBasic.objects.filter(pk__lte=5).update(cqrs_revision=4)
    text, _ = dumped(GoldenBasic, batch_size=10)
    result = load(GoldenBasicReplica, text.split('\n')[1:], batch_size=10, write_err=print)
    assert (result.applied, result.skipped, result.failed) == (25, 0, [])
    names = [f.name for f in GoldenBasicReplica._meta.concrete_fields]
    master = list(GoldenBasic.objects.order_by('pk').values_list(*names[:-1], 'parent_id'))
    replica = list(GoldenBasicReplica.objects.order_by('pk').values_list(*names))
    assert master == replica


def test_fast_insert_values_are_the_ones_django_would_send():
    """Values prepared without instances equal ``pre_save`` + ``get_db_prep_save`` of one."""
    basic_rows(5)
    text, _ = dumped(GoldenBasic)
    plan = plan_for(GoldenBasicReplica)
    kwargs_list = [
        plan.to_model_kwargs(GoldenBasicReplica.cqrs._map_save_data(wire.loads(row)))
        for row in text.split('\n')[1:]
    ]
    fields = list(GoldenBasicReplica._meta.concrete_fields)
    table = writes.table_for(GoldenBasicReplica, connection)
    assert table is not None
    direct = table.params(kwargs_list)
    objects = [GoldenBasicReplica(**kwargs) for kwargs in kwargs_list]
    django = [
        [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields] for obj in objects
    ]
    assert comparable(direct) == comparable(django)


def comparable(rows):
    """Values and their types; adapter wrappers without ``==`` (psycopg's Jsonb) by content."""
    return [
        [(type(v), v.obj if hasattr(v, 'obj') and hasattr(v, 'dumps') else v) for v in row]
        for row in rows
    ]


def test_a_bad_row_in_a_big_chunk_fails_alone_with_true_counts():
    """One row the database refuses: the chunk is retried row by row, the others are kept."""
    lines = [line(pk, 0, f'n{pk}') for pk in range(1, 51)]
    lines[20] = json.dumps({'id': 21, 'name': None, 'cqrs_revision': 0, 'cqrs_updated': str(NOW)})
    messages = []
    result = load(GoldenParentReplica, lines, batch_size=50, write_err=messages.append)
    assert (result.applied, result.skipped, result.failed) == (49, 0, [22])
    assert messages == ["Instance can't be saved: line 22!\n"]
    ids = set(GoldenParentReplica.objects.values_list('id', flat=True))
    assert ids == set(range(1, 51)) - {21}


def test_the_load_leaves_the_garbage_collector_as_it_found_it(monkeypatch):
    """A process that loads a dump (call_command in a web worker, a test run) gets back a
    collector that sees every object again, also when the load raises."""
    import gc

    lines = [line(pk, 0, f'n{pk}') for pk in range(1, 4)]
    load(GoldenParentReplica, lines, batch_size=2, write_err=print)
    assert gc.get_freeze_count() == 0
    assert GoldenParentReplica.objects.count() == 3

    def broken(*args, **kwargs):
        assert gc.get_freeze_count() > 0  # the load itself runs with the start-up heap frozen
        raise RuntimeError('database gone')

    monkeypatch.setattr(bulk_load_module, '_apply_bulk', broken)
    with pytest.raises(RuntimeError):
        load(GoldenParentReplica, lines, batch_size=2, write_err=print)
    assert gc.get_freeze_count() == 0


def test_a_newer_replica_row_is_kept_inside_a_chunk_of_new_rows(cqrs_log):
    """A row the replica has at a higher revision is not overwritten; its neighbours load."""
    GoldenParentReplica.objects.create(id=5, name='newer', cqrs_revision=9, cqrs_updated=NOW)
    GoldenParentReplica.objects.create(id=6, name='older', cqrs_revision=1, cqrs_updated=NOW)
    lines = [line(pk, 3, f'n{pk}') for pk in range(1, 11)]
    result = load(GoldenParentReplica, lines, batch_size=100, write_err=print)
    names = dict(GoldenParentReplica.objects.values_list('id', 'name'))
    assert names[5] == 'newer' and names[6] == 'n6' and names[10] == 'n10'
    assert len(names) == 10
    assert (result.applied, result.skipped, result.failed) == (9, 1, [])
    assert any('Wrong CQRS sync order: pk = 5' in entry for entry in cqrs_log())


def test_reload_in_several_batches_skips_every_row():
    """Each batch finds the rows loaded before (by pk range for integer pks)."""
    lines = [line(pk, 1) for pk in range(1, 31)]
    first = load(GoldenParentReplica, lines, batch_size=10, write_err=print)
    again = load(GoldenParentReplica, lines, batch_size=10, write_err=print)
    newer = load(
        GoldenParentReplica,
        [line(pk, 2, 'v2') for pk in range(1, 31)],
        batch_size=7,
        write_err=print,
    )
    assert (first.applied, first.skipped) == (30, 0)
    assert (again.applied, again.skipped, again.failed) == (0, 30, [])
    assert (newer.applied, newer.skipped, newer.failed) == (30, 0, [])
    assert set(GoldenParentReplica.objects.values_list('name', flat=True)) == {'v2'}


def test_reload_with_text_pks_skips_every_row():
    """Models whose pk is not an integer look their rows up by pk."""
    lines = [
        json.dumps({'code': f'c{n}', 'name': 'x', 'cqrs_revision': 0, 'cqrs_updated': str(NOW)})
        for n in range(12)
    ]
    first = load(CustomPKReplica, lines, batch_size=5, write_err=print)
    again = load(CustomPKReplica, lines, batch_size=5, write_err=print)
    assert (first.applied, again.skipped, again.failed) == (12, 12, [])


def test_tombstoned_row_is_not_resurrected_by_a_chunk(cqrs_log):
    """A row the replica deleted at a later revision stays deleted; the rest of the chunk loads."""
    from dj_cqrs.models import Tombstone

    Tombstone.objects.create(
        cqrs_id='golden_parent', instance_pk='7', cqrs_revision=3, deleted_at=NOW
    )
    lines = [line(pk, 2) for pk in range(1, 21)]
    result = load(GoldenParentReplica, lines, batch_size=20, write_err=print)
    ids = set(GoldenParentReplica.objects.values_list('id', flat=True))
    assert ids == set(range(1, 21)) - {7}
    assert any('CQRS deleted data is not restored: pk = 7' in entry for entry in cqrs_log())
    assert result.failed == []


def test_model_with_post_init_receiver_is_built_as_instances():
    """With a ``post_init`` receiver the rows are saved one by one, from real instances."""
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.pk)

    post_init.connect(receiver, sender=GoldenParentReplica)
    try:
        assert not default_write_path(GoldenParentReplica)
        result = load(GoldenParentReplica, [line(1), line(2)], write_err=print)
    finally:
        post_init.disconnect(receiver, sender=GoldenParentReplica)
    assert result.applied == 2 and seen == [1, 2]
    assert GoldenParentReplica.objects.count() == 2


def test_exact_decimals_load_without_losing_digits():
    """Decimals of the dump reach the replica with every digit."""
    GoldenTime.objects.create(
        name='t', at=datetime.time(1, 2), exact=Decimal('0.12500000000000000000')
    )
    text, _ = dumped(GoldenTime)
    load(GoldenTimeReplica, text.split('\n')[1:], write_err=print)
    assert str(GoldenTimeReplica.objects.get().exact) == '0.12500000000000000000'


def test_load_through_the_command_counts_true(tmp_path):
    """The command's output lines are the original's: one per failed line, then the count."""
    source = tmp_path / 'p.dump'
    rows = [line(pk) for pk in range(1, 6)] + ['{bad']
    source.write_text('golden_parent\n' + '\n'.join(rows))
    out, err = io.StringIO(), io.StringIO()
    call_command('cqrs_bulk_load', '-i', str(source), stdout=out, stderr=err)
    assert err.getvalue() == "Dump file can't be parsed: line 7!\nDone!\n5 instance(s) loaded.\n"


def test_wire_loads_of_text_behaves_like_json_loads():
    """The cached decoder keeps ``json.loads``' answers, its errors and exact numbers."""
    assert wire.loads('{"a": 1.10, "b": [1, "x"]}')['a'].text == '1.10'
    assert wire.loads(b'{"a": 2.50}')['a'].text == '2.50'
    with pytest.raises(ValueError):
        wire.loads('\ufeff{}')
    with pytest.raises(ValueError):
        wire.loads('{"a": 1} x')


def test_auto_now_fields_are_not_plain():
    """Fields that set their value on save need instances."""

    field = models.DateTimeField(auto_now=True)
    field.set_attributes_from_name('stamp')
    assert not pre_save_is_plain(field, adding=True)


@pytest.mark.parametrize('copy', [True, False])
def test_insert_with_and_without_copy_gives_the_same_rows(monkeypatch, copy):
    """PostgreSQL loads by ``COPY`` or, for a table with rules, by multi-row INSERTs."""
    monkeypatch.setattr(writes, 'COPY_MIN_ROWS', 1)
    if not copy:
        monkeypatch.setattr(writes.Table, '_copy_allowed', lambda *args: False)
    basic_rows(12)
    text, _ = dumped(GoldenBasic)
    result = load(GoldenBasicReplica, text.split('\n')[1:], write_err=print)
    assert (result.applied, result.failed) == (12, [])
    assert list(GoldenBasicReplica.objects.order_by('pk').values_list('payload', 'amount')) == list(
        GoldenBasic.objects.order_by('pk').values_list('payload', 'amount')
    )


def test_copy_is_used_only_for_plain_postgresql_tables():
    """``COPY`` skips rules, so a table with rules (or any other database) gets INSERTs."""
    table = writes.table_for(GoldenParentReplica, connection)
    with connection.cursor() as cursor:
        allowed = table._copy_allowed(cursor)
    assert allowed is (connection.vendor == 'postgresql')


def test_select_for_update_model_with_a_foreign_key_loads_and_reloads(cqrs_log):
    """Rows with a raw FK id load in bulk; a reload skips, a newer revision updates."""
    from tests.dj_replica.models import AuthorReplica

    def author(pk, revision, name):
        return json.dumps(
            {
                'id': pk,
                'name': name,
                'publisher': 40 + pk,
                'cqrs_revision': revision,
                'cqrs_updated': str(NOW),
            }
        )

    lines = [author(pk, 0, 'a') for pk in range(1, 6)]
    first = load(AuthorReplica, lines, write_err=print)
    again = load(AuthorReplica, lines, write_err=print)
    newer = load(AuthorReplica, [author(3, 1, 'b')], write_err=print)
    assert (first.applied, again.skipped, newer.applied) == (5, 5, 1)
    rows = dict(AuthorReplica.objects.values_list('id', 'publisher_id'))
    assert rows == {pk: 40 + pk for pk in range(1, 6)}
    assert AuthorReplica.objects.get(id=3).name == 'b'
    assert any('Received duplicate CQRS data: pk = 4' in entry for entry in cqrs_log())


def test_several_bad_rows_in_a_batch_are_found_and_reported_in_order():
    """Bad rows spread over a big batch each fail alone, reported in line order; counts true."""
    bad = {17, 130, 131, 299}
    lines = [
        json.dumps({'id': pk, 'name': None, 'cqrs_revision': 0, 'cqrs_updated': str(NOW)})
        if pk in bad
        else line(pk, 0, f'n{pk}')
        for pk in range(1, 301)
    ]
    messages = []
    result = load(GoldenParentReplica, lines, batch_size=300, write_err=messages.append)
    assert (result.applied, result.skipped) == (296, 0)
    assert result.failed == [pk + 1 for pk in sorted(bad)]
    assert messages == [f"Instance can't be saved: line {pk + 1}!\n" for pk in sorted(bad)]
    ids = set(GoldenParentReplica.objects.values_list('id', flat=True))
    assert ids == set(range(1, 301)) - bad


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_big_rows_loads_whole():
    """40 rows of 600 kB in one batch (24 MB, over MariaDB's 16 MB max_allowed_packet for one
    statement) all load: no statement is larger than the server accepts."""
    basic_rows(40)
    GoldenBasic.objects.update(text='x' * 600_000)
    GoldenBasicReplica.objects.all().delete()
    text, _ = dumped(GoldenBasic, batch_size=40)
    errors: list[str] = []
    result = load(GoldenBasicReplica, text.split('\n')[1:], batch_size=40, write_err=errors.append)
    assert (result.applied, result.failed, errors) == (40, [], [])
    lengths = GoldenBasicReplica.objects.values_list(models.functions.Length('text'), flat=True)
    assert list(lengths) == [600_000] * 40
