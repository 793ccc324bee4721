"""Applying an UPDATE so that concurrent workers never move a row back to an older revision.

Models on the default write path (:mod:`dj_cqrs.replica.writepath`) get one compare-and-set
``UPDATE ... WHERE pk = %s AND cqrs_revision < new``; models with their own hooks get the row
locked (``SELECT ... FOR UPDATE``) before the revision check instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

from dj_cqrs.replica.plan import plan_for
from dj_cqrs.replica.writepath import default_write_path

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import ReplicaMixin


compare_and_set_ok = default_write_path
"""Whether an update of ``model`` can be one conditional UPDATE (else: lock the row)."""


def update_if_older(
    model: type[ReplicaMixin],
    instance: models.Model,
    mapped_data: dict[str, Any],
    revision: int,
    *,
    sync: bool,
    using: str,
) -> bool:
    """Write ``mapped_data`` if the row is still older than ``revision`` (any on sync); whether
    it was written (``instance`` then holds the new values)."""
    plan = plan_for(model)
    values = plan.to_model_kwargs(mapped_data)
    changes = {key: value for key, value in values.items() if key not in plan.pk_names}
    queryset = model._default_manager.using(using).filter(pk=instance.pk)
    if not sync:
        queryset = queryset.filter(cqrs_revision__lt=revision)
    if not queryset.update(**changes):
        return False
    for key, value in changes.items():
        setattr(instance, key, value)
    return True
