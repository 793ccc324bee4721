"""Whether a replica model's rows may be written without calling its hooks (the one predicate).

The fast paths (batched apply, ``cqrs_bulk_load``, compare-and-set updates) write rows with SQL
of their own, so only for a model whose rows end up as the one-by-one code would write them:
no overridden hook of the mixin, ``Model`` or manager (also patched in later), no flag that
changes writes, no computing ``pre_save()``, no multi-table inheritance, no model signal receiver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeGuard

from django.db import models
from django.db.models import signals as model_signals

from dj_cqrs.hooks import function_of
from dj_cqrs.replica.plan import pre_save_is_plain

if TYPE_CHECKING:
    from dj_cqrs.replica.mixin import ReplicaMixin

_MIXIN_HOOKS = ('cqrs_save', 'cqrs_create', 'cqrs_update', 'cqrs_delete')
_MODEL_HOOKS = ('__init__', 'save', 'save_base')
_MANAGER_HOOKS = (
    'save_instance',
    '_save_instance',
    '_current_row',
    '_create_missing',
    'create_instance',
    'update_instance',
    '_revision_allows',
    '_map_save_data',
)
_SIGNALS = (
    model_signals.pre_init,
    model_signals.post_init,
    model_signals.pre_save,
    model_signals.post_save,
)

# model -> (the hooks it held when it was judged, the verdict): judged again when they change.
_verdicts: dict[type, tuple[tuple[object, ...], bool]] = {}


def default_write_path(model: type) -> TypeGuard[type[ReplicaMixin]]:
    """Whether rows of ``model`` may be written in bulk or by a conditional UPDATE.

    Cached per model and keyed by its hooks as they are now (a patched hook is seen); signal
    receivers are looked at on every call (Django caches that lookup).
    """
    manager = type(getattr(model, 'cqrs', None))
    hooks = (manager, *_hooks(model, _MIXIN_HOOKS + _MODEL_HOOKS), *_hooks(manager, _MANAGER_HOOKS))
    cached = _verdicts.get(model)
    if cached is None or cached[0] != hooks:
        cached = _verdicts[model] = (hooks, _judge(model, manager, hooks[1:]))
    if not cached[1]:
        return False
    return not any(signal.has_listeners(model) for signal in _SIGNALS)


def _hooks(owner: type, names: tuple[str, ...]) -> tuple[object, ...]:
    return tuple(function_of(getattr(owner, name, None)) for name in names)


def _judge(model: type, manager: type, hooks: tuple[object, ...]) -> bool:
    from dj_cqrs.replica.manager import ReplicaManager
    from dj_cqrs.replica.mixin import ReplicaMixin

    if not (isinstance(model, type) and issubclass(model, ReplicaMixin)):
        return False
    if not issubclass(manager, ReplicaManager):
        return False
    meta = model._meta
    if meta.abstract or meta.proxy or meta.parents:
        return False
    # (``CQRS_SELECT_FOR_UPDATE`` does not change what is written: the fast paths read the
    # rows ``FOR UPDATE`` anyway, and one-by-one updates lock the row before comparing.)
    flags = ('CQRS_NO_DB_OPERATIONS', 'CQRS_CUSTOM_SERIALIZATION')
    if any(getattr(model, flag, False) for flag in flags):
        return False
    library = (
        *_hooks(ReplicaMixin, _MIXIN_HOOKS),
        *_hooks(models.Model, _MODEL_HOOKS),
        *_hooks(ReplicaManager, _MANAGER_HOOKS),
    )
    if hooks != library:
        return False
    # Bulk writes and queryset updates run no Field.pre_save(): each field stores its value.
    return all(pre_save_is_plain(f, adding=True) for f in meta.concrete_fields)
