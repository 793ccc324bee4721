"""``cqrs_bulk_dump``: every row of a master model to a dump file (the load: ``bulk_load``).

Dump format (the original's): the CQRS_ID on the first line, then one compact JSON object per
row (``to_cqrs_dict``), each preceded by a newline; no newline at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from django.db import connections, models, router

from dj_cqrs import wire
from dj_cqrs.hooks import is_default
from dj_cqrs.management.bulk_load import load as load  # the load's older import path
from dj_cqrs.management.progress import Progress
from dj_cqrs.management.utils import Write, keyset_batches
from dj_cqrs.master.bulk_relate import bulk_relate_cqrs_serialization
from dj_cqrs.master.mixin import RawMasterMixin
from dj_cqrs.master.serialization import plan_for, to_cqrs_dict
from dj_cqrs.values import WireReady, exact_decimal, exact_numbers


@dataclass
class DumpResult:
    saved: int = 0
    processed: int = 0


def dump(
    model: type[RawMasterMixin],
    out: IO[str],
    *,
    batch_size: int = 10000,
    progress: bool = False,
    write_err: Write,
) -> DumpResult:
    """Write the dump of every row of the master ``model`` to ``out``; a row that cannot be
    serialized is reported on ``write_err`` and left out."""
    total = model._default_manager.count()
    if progress:
        write_err(f'Processing {total} records with batch size {batch_size}\n')
    tracker = Progress(total, write_err, enabled=progress)
    result = DumpResult()
    out.write(model.CQRS_ID or '')
    batches = _plain_batches if _plain_serialization(model) else _serialized_batches
    for size, chunk in batches(model, batch_size, write_err):
        out.write(''.join(chunk))
        result.processed += size
        result.saved += len(chunk)
        tracker.advance(size)
    return result


def _serialized_batches(
    model: Any, batch_size: int, write_err: Write
) -> Iterator[tuple[int, list[str]]]:
    """``(rows read, ['\\n' + json, ...])`` per keyset batch, each row through its model."""
    queryset = model.relate_cqrs_serialization(model._default_manager.all())
    overridden = not is_default(model, 'to_cqrs_dict', RawMasterMixin)
    for batch in keyset_batches(queryset, batch_size):
        chunk: list[str] = []
        with bulk_relate_cqrs_serialization(model.CQRS_ID) as context:
            # An override is called as the original calls it (``to_cqrs_dict()``); when it
            # reads the row again (``super()`` of a serializer model), the batch serves it.
            context.prime(batch)
            for instance in batch:
                try:
                    if overridden:
                        data = instance.to_cqrs_dict()
                    else:
                        data = to_cqrs_dict(instance, sync=True)
                    chunk.append('\n' + wire.dumps(data))
                except Exception as err:
                    _dump_failed(instance.pk, err, write_err)
        yield len(batch), chunk


def _plain_batches(
    model: Any, batch_size: int, write_err: Write
) -> Iterator[tuple[int, list[str]]]:
    """Rows straight from the database (no model instances): the dict ``to_cqrs_dict``
    builds from the same columns, each value made ready for the wire by its field's converter,
    so ``wire.dumps`` writes it without walking it again."""
    columns = plan_for(model).columns
    names = [name for name, _, _ in columns]
    attnames = [attname for _, attname, _ in columns]
    pk_index = attnames.index(model._meta.pk.attname)
    vendor = connections[router.db_for_read(model)].vendor
    converters = [
        (index, convert)
        for index, convert in enumerate(
            _wire_converter(model._meta.get_field(name), convert, vendor)
            for name, _, convert in columns
        )
        if convert is not None
    ]
    # Read through the model's relate_cqrs_serialization as the original does (an override
    # may filter rows); its prefetches and select_related have no column to add here.
    related = model.relate_cqrs_serialization(model._default_manager.all())
    rows = related.prefetch_related(None).values_list(*attnames)
    dumps = wire.dumps
    for batch in keyset_batches(rows, batch_size, key=lambda row: row[pk_index]):
        chunk: list[str] = []
        append = chunk.append
        for row in batch:
            try:
                if converters:
                    row = list(row)
                    for index, convert in converters:
                        row[index] = convert(row[index])
                append('\n' + dumps(WireReady(zip(names, row, strict=True))))
            except Exception as err:
                _dump_failed(row[pk_index], err, write_err)
        yield len(batch), chunk


# Fields whose database values are plain ints, floats, bools or text on these backends: no
# Decimal can be in them, so the wire takes them as they are.
_SCALAR_FIELDS = (
    models.IntegerField,
    models.CharField,
    models.TextField,
    models.BooleanField,
    models.FloatField,
)
_SCALAR_VENDORS = ('sqlite', 'postgresql', 'mysql')


def _wire_converter(field: Any, convert: Any, vendor: str) -> Any:
    """The function that makes a column's value what ``exact_numbers`` would make it."""
    if convert is not None:
        # The serialization converters return text (or None): nothing left to walk.
        return convert
    if isinstance(field, models.DecimalField) and not hasattr(field, 'from_db_value'):
        return exact_decimal
    target = field
    while target.is_relation and target.target_field is not target:
        if hasattr(target, 'from_db_value'):
            return exact_numbers
        target = target.target_field
    plain = isinstance(target, _SCALAR_FIELDS) and not hasattr(target, 'from_db_value')
    # Django's JSONField reads with json.loads: without a decoder of the user's, no Decimal.
    plain = plain or (type(target) is models.JSONField and target.decoder is None)
    if plain and vendor in _SCALAR_VENDORS:
        return None
    return exact_numbers


def _dump_failed(pk: Any, err: Exception, write_err: Write) -> None:
    write_err(f'\nDump record failed for pk={pk}: {type(err).__name__}: {err}\n')


def _plain_serialization(model: Any) -> bool:
    """No serializer and no ``to_cqrs_dict`` override: each line is the default column copy."""
    return not model.CQRS_SERIALIZER and is_default(model, 'to_cqrs_dict', RawMasterMixin)
