"""Tracked fields: the values a row had when loaded or last saved (``previous_data``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.db import models
from django.db.models.signals import post_init

from dj_cqrs.constants import ALL_BASIC_FIELDS, FIELDS_TRACKER_FIELD_NAME
from dj_cqrs.values import get_json_valid_value

if TYPE_CHECKING:
    from dj_cqrs.master.mixin import RawMasterMixin

_INITIAL = '_cqrs_tracker_initial'
_DEFERRED = object()
_T = TypeVar('_T')


def _copy(value: _T) -> _T:
    if isinstance(value, (dict, list)):
        return copy.deepcopy(value)
    return value


class CQRSTracker:
    """The tracked fields of one model class."""

    def __init__(self, model: type[models.Model], field_names: list[str]) -> None:
        fields = (model._meta.get_field(name) for name in field_names)
        # attname -> name: FKs are tracked by attname (parent_id) and reported on update
        # under their field name (parent), as the original does.
        self.attnames = {f.attname: f.name for f in fields if f.concrete and not f.many_to_many}

    @classmethod
    def add_to_model(cls, model: type[RawMasterMixin]) -> CQRSTracker:
        declared = model.CQRS_TRACKED_FIELDS
        if declared == ALL_BASIC_FIELDS:
            names = [f.name for f in model._meta.concrete_fields]
        else:
            names = list(cast(Sequence[str], declared))  # (None: not called)
        tracker = cls(model, names)
        setattr(model, FIELDS_TRACKER_FIELD_NAME, tracker)
        post_init.connect(tracker.store, sender=model, weak=False)
        return tracker

    def store(self, instance: models.Model, **kwargs: object) -> None:
        """Remember the current values as the baseline for the next change."""
        state = instance.__dict__
        state[_INITIAL] = {
            attname: _copy(state.get(attname, _DEFERRED)) for attname in self.attnames
        }

    def changed(self, instance: models.Model) -> dict[str, Any]:
        """Changed fields with their old values, keyed by field name (``parent``)."""
        state = instance.__dict__
        initial = state.get(_INITIAL) or {}
        changed = {}
        for attname, name in self.attnames.items():
            old = initial.get(attname, _DEFERRED)
            if old is _DEFERRED or attname not in state:
                continue
            if state[attname] != old:
                changed[name] = get_json_valid_value(old)
        return changed

    def created(self, instance: models.Model) -> dict[str, None]:
        """What an insert reports: every tracked field that has a value, as ``None``."""
        return {a: None for a in self.attnames if instance.__dict__.get(a) is not None}

    def current(self, instance: models.Model) -> dict[str, Any]:
        """All tracked fields with their current values, keyed by attname."""
        return {a: get_json_valid_value(instance.__dict__.get(a)) for a in self.attnames}


def get_tracker(model: type[models.Model]) -> CQRSTracker | None:
    return getattr(model, FIELDS_TRACKER_FIELD_NAME, None)
