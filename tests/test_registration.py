"""Model declarations are checked at class creation with clear errors (original.md §2.1, §3.1)."""

import pytest
from django.db import models

from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.metas import MasterMeta, ReplicaMeta
from dj_cqrs.mixins import MasterMixin, RawMasterMixin, ReplicaMixin
from dj_cqrs.registries import MasterRegistry, ReplicaRegistry

counter = iter(range(10_000))


def make_master(**attrs):
    name = f'M{next(counter)}'
    attrs.setdefault('name', models.CharField(max_length=10))
    attrs['__module__'] = 'tests.dj_master.models'
    attrs['Meta'] = type('Meta', (), {'app_label': 'dj_master'})
    return type(name, (MasterMixin,), attrs)


def make_replica(**attrs):
    name = f'R{next(counter)}'
    attrs.setdefault('name', models.CharField(max_length=10))
    attrs['__module__'] = 'tests.dj_replica.models'
    attrs['Meta'] = type('Meta', (), {'app_label': 'dj_replica'})
    return type(name, (ReplicaMixin,), attrs)


@pytest.mark.parametrize(
    ('attrs', 'message'),
    [
        ({}, 'CQRS_ID must be set for every model, that uses CQRS'),
        ({'CQRS_ID': 'golden_parent'}, "Two models can't have the same CQRS_ID: golden_parent."),
        ({'CQRS_ID': 'x1', 'CQRS_FIELDS': ['id'], 'CQRS_SERIALIZER': 'a.b'},
         "CQRS_FIELDS can't be set together with CQRS_SERIALIZER."),
        ({'CQRS_ID': 'x2', 'CQRS_FIELDS': ['id', 'id']},
         'Duplicate names in CQRS_FIELDS field for model'),
        ({'CQRS_ID': 'x3', 'CQRS_FIELDS': ['name']}, 'PK is not in CQRS_FIELDS for model'),
        ({'CQRS_ID': 'x4', 'CQRS_FIELDS': ['id', 'nope']},
         'CQRS_FIELDS field is not correctly set for model'),
        ({'CQRS_ID': 'x5', 'CQRS_TRACKED_FIELDS': ['name', 'name']},
         'Duplicate names in CQRS_TRACKED_FIELDS field for model'),
        ({'CQRS_ID': 'x6', 'CQRS_TRACKED_FIELDS': ['nope']},
         'CQRS_TRACKED_FIELDS field is not correctly set for model'),
        ({'CQRS_ID': 'x7', 'CQRS_TRACKED_FIELDS': 'some'},
         'Invalid configuration for CQRS_TRACKED_FIELDS'),
    ],
)
def test_master_declaration_errors(attrs, message):
    """Each wrong master declaration raises ConfigurationError with the original's words."""
    with pytest.raises(ConfigurationError, match=message.replace('(', r'\(')):
        make_master(**attrs)


@pytest.mark.parametrize(
    ('attrs', 'message'),
    [
        ({}, 'CQRS_ID must be set for every model, that uses CQRS'),
        ({'CQRS_ID': 'golden_parent'}, "Two models can't have the same CQRS_ID: golden_parent."),
        ({'CQRS_ID': 'y1', 'CQRS_MAPPING': {'a': 'name', 'b': 'name'}},
         'Duplicate names in CQRS_MAPPING field for model'),
        ({'CQRS_ID': 'y2', 'CQRS_MAPPING': {'a': 'name'}}, 'PK is not in CQRS_MAPPING for model'),
        ({'CQRS_ID': 'y3', 'CQRS_MAPPING': {'a': 'id', 'b': 'nope'}},
         'CQRS_MAPPING field is not correctly set for model'),
    ],
)
def test_replica_declaration_errors(attrs, message):
    """Each wrong replica declaration raises ConfigurationError with the original's words."""
    with pytest.raises(ConfigurationError, match=message):
        make_replica(**attrs)


def test_abstract_bases_without_id_are_allowed():
    """Intermediate abstract master and replica bases need no CQRS_ID (the original refused)."""

    class AbstractMasterBase(MasterMixin):
        class Meta:
            abstract = True
            app_label = 'dj_master'

    class AbstractReplicaBase(ReplicaMixin):
        class Meta:
            abstract = True
            app_label = 'dj_replica'

    assert AbstractMasterBase not in MasterRegistry.models.values()
    assert AbstractReplicaBase not in ReplicaRegistry.models.values()


def test_registries_and_raw_registration():
    """Registries map ids to models; RawMasterMixin models register through MasterMeta.register."""
    from tests.dj_master.models import GoldenParent, RawTree
    from tests.dj_replica.models import EventLog, GoldenParentReplica

    assert MasterRegistry.get_model_by_cqrs_id('golden_parent') is GoldenParent
    assert ReplicaRegistry.get_model_by_cqrs_id('golden_parent') is GoldenParentReplica
    assert MasterRegistry.get_model_by_cqrs_id('raw_tree') is RawTree
    assert issubclass(RawTree, RawMasterMixin)
    assert ReplicaRegistry.get_model_by_cqrs_id('event_log') is EventLog
    assert callable(MasterMeta.register) and callable(ReplicaMeta.register)


def test_unknown_id_lookup_logs(cqrs_log):
    """Looking up an unknown id logs the original's error line and returns None."""
    assert MasterRegistry.get_model_by_cqrs_id('nope') is None
    assert 'ERROR No model with such CQRS_ID: nope.' in cqrs_log()


def test_public_import_paths():
    """Every public path of django-cqrs 3.1 imports, including the star import of transports."""
    import importlib

    names = {
        'dj_cqrs.mixins': ['MasterMixin', 'RawMasterMixin', 'ReplicaMixin', 'RawReplicaMixin'],
        'dj_cqrs.metas': ['MasterMeta', 'ReplicaMeta'],
        'dj_cqrs.registries': ['MasterRegistry', 'ReplicaRegistry'],
        'dj_cqrs.managers': ['MasterManager', 'ReplicaManager'],
        'dj_cqrs.signals': ['post_bulk_create', 'post_update', 'MasterSignals'],
        'dj_cqrs.constants': ['SignalType', 'NO_QUEUE', 'ALL_BASIC_FIELDS'],
        'dj_cqrs.dataclasses': ['TransportPayload'],
        'dj_cqrs.transport': ['BaseTransport'],
        'dj_cqrs.transport.mock': ['TransportMock'],
        'dj_cqrs.controller.producer': ['produce'],
        'dj_cqrs.controller.consumer': ['consume', 'route_signal_to_replica_model'],
        'dj_cqrs.utils': ['bulk_relate_cqrs_serialization', 'get_message_expiration_dt'],
        'dj_cqrs.delay': ['DelayQueue', 'DelayMessage'],
        'dj_cqrs.correlation': ['get_correlation_id'],
        'dj_cqrs.admin': ['CQRSAdminMasterSyncMixin'],
        'dj_cqrs.admin_mixins': ['CQRSAdminMasterSyncMixin'],
        'dj_cqrs.apps': ['CQRSConfig'],
        'dj_cqrs.tracker': ['CQRSTracker'],
    }
    for module, attrs in names.items():
        imported = importlib.import_module(module)
        for attr in attrs:
            assert hasattr(imported, attr), f'{module}.{attr}'
    namespace = {}
    exec('from dj_cqrs.transport import *', namespace)
    assert 'BaseTransport' in namespace
