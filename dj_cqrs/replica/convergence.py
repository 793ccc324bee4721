"""Applying an UPDATE so that concurrent workers never move a row back to an older revision.

For plain replica models (default ``cqrs_update``, no ``save()`` override, nobody listening to
``pre_save``/``post_save`` of the model, no field whose ``pre_save()`` computes the value) an
update is one atomic compare-and-set:
``UPDATE ... SET ... WHERE pk = %s AND cqrs_revision < new``. If another worker wrote a newer
revision in between, nothing changes and the caller re-reads the row.

Models with their own hooks get the row locked (``SELECT ... FOR UPDATE``) before the revision
check instead, so their ``cqrs_update`` runs on the current row and nothing overtakes it.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import signals as model_signals

from dj_cqrs.replica.plan import plan_for, pre_save_is_plain

_cache: dict[type, bool] = {}


def compare_and_set_ok(model: type[models.Model]) -> bool:
    """Whether an update of ``model`` can be one conditional UPDATE (else: lock the row)."""
    cached = _cache.get(model)
    if cached is None:
        cached = _cache[model] = _statically_plain(model)
    if not cached:
        return False
    # Hooks (a test patches them) and receivers can change at any time: checked on every
    # message (cheap), so that an override is never skipped.
    if not _default_hooks(model):
        return False
    return not (
        model_signals.pre_save.has_listeners(model) or model_signals.post_save.has_listeners(model)
    )


def _statically_plain(model: type[models.Model]) -> bool:
    if model.CQRS_CUSTOM_SERIALIZATION or model.CQRS_SELECT_FOR_UPDATE:
        return False
    if model._meta.parents:
        return False
    if model.save is not models.Model.save or model.save_base is not models.Model.save_base:
        return False
    # A queryset update skips Field.pre_save(): only fields that store what they are given.
    return all(pre_save_is_plain(f, adding=False) for f in model._meta.concrete_fields)


def _default_hooks(model: type[models.Model]) -> bool:
    from dj_cqrs.hooks import all_default, is_default
    from dj_cqrs.replica.mixin import ReplicaMixin

    return is_default(model, 'cqrs_update', ReplicaMixin) and all_default(
        model, ('save', 'save_base'), models.Model
    )


def needs_row_lock(model: type[models.Model]) -> bool:
    """Whether the row is locked when it is read (custom hooks, or the model asks for it)."""
    return bool(model.CQRS_SELECT_FOR_UPDATE) or not compare_and_set_ok(model)


def update_if_older(
    model: type[models.Model],
    instance: models.Model,
    mapped_data: dict[str, Any],
    revision: int,
    *,
    sync: bool,
    using: str,
) -> bool:
    """Write ``mapped_data`` if the row is still older than ``revision`` (any revision on sync).

    Returns whether the row was written; ``instance`` then holds the new values.
    """
    plan = plan_for(model)
    values = plan.to_model_kwargs(mapped_data)
    pk_names = {plan.pk_name, model._meta.pk.attname}
    changes = {key: value for key, value in values.items() if key not in pk_names}
    queryset = model._default_manager.using(using).filter(pk=instance.pk)
    if not sync:
        queryset = queryset.filter(cqrs_revision__lt=revision)
    if not queryset.update(**changes):
        return False
    for key, value in changes.items():
        setattr(instance, key, value)
    return True
