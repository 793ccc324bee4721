"""Settings parsing, system checks and configuration errors (decisions §2.10)."""

import copy

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from dj_cqrs import conf
from dj_cqrs.checks import check_settings
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport import InProcessTransport, TransportMock, get_transport


def ids(settings_value):
    with override_settings(CQRS=settings_value):
        return [(m.id, m.msg) for m in check_settings()]


def test_defaults_are_applied_on_a_copy(settings):
    """Every documented default is applied; settings.CQRS itself is never modified."""
    settings.CQRS = {'transport': 'dj_cqrs.transport.InProcessTransport', 'queue': 'q'}
    before = copy.deepcopy(settings.CQRS)
    parsed = conf.get_settings()
    assert parsed.master.auto_update_fields is False
    assert parsed.master.message_ttl == 86400
    assert parsed.master.correlation_function is None and parsed.master.meta_function is None
    assert parsed.replica.max_retries == 30
    assert parsed.replica.retry_delay == 2
    assert parsed.replica.delay_queue_max_size == 1000
    assert parsed.replica.dead_message_ttl == 864000
    assert parsed.dead_letter_queue == 'dead_letter_q'
    assert parsed.exchange == 'cqrs'
    assert parsed.consumer_prefetch_count == 10
    assert settings.CQRS == before


def test_documented_delay_queue_spelling_is_accepted(settings):
    """Both delay_queue_max_size and the documented CQRS_DELAY_QUEUE_MAX_SIZE work."""
    settings.CQRS = {**settings.CQRS, 'replica': {'CQRS_DELAY_QUEUE_MAX_SIZE': 5}}
    assert conf.get_settings().replica.delay_queue_max_size == 5
    settings.CQRS = {**settings.CQRS, 'replica': {'delay_queue_max_size': None}}
    assert conf.get_settings().replica.delay_queue_max_size is None


def test_transport_follows_override_settings():
    """The transport is resolved lazily and follows override_settings."""
    assert get_transport() is InProcessTransport
    with override_settings(CQRS={'transport': 'dj_cqrs.transport.mock.TransportMock'}):
        assert get_transport() is TransportMock
    assert get_transport() is InProcessTransport


def test_missing_transport_is_reported():
    """No transport: check dj_cqrs.E003; an unimportable one: dj_cqrs.E004 naming the path."""
    assert ('dj_cqrs.E003', 'CQRS transport is not set.') in ids({'queue': 'q'})
    found = ids({'transport': 'no.such.Transport', 'queue': 'q'})
    assert found[0][0] == 'dj_cqrs.E004' and 'no.such.Transport' in found[0][1]
    found = ids({'transport': 'dj_cqrs.conf.parse', 'queue': 'q'})
    assert found[0][0] == 'dj_cqrs.E004' and 'BaseTransport' in found[0][1]


def test_cqrs_must_be_a_dict():
    """settings.CQRS of the wrong type is dj_cqrs.E002."""
    assert ids(['transport'])[0][0] == 'dj_cqrs.E002'


def test_replica_service_needs_a_string_queue():
    """A service with replica models needs CQRS['queue'] (E005), a string (E006)."""
    base = {'transport': 'dj_cqrs.transport.InProcessTransport'}
    assert [i for i, _ in ids(base)] == ['dj_cqrs.E005']
    assert [i for i, _ in ids({**base, 'queue': 5})] == ['dj_cqrs.E006']


def test_master_section_errors_name_the_key():
    """Wrong master values are errors naming the key; sections must be dicts."""
    base = {'transport': 'dj_cqrs.transport.InProcessTransport', 'queue': 'q'}
    found = ids({**base, 'master': {'CQRS_AUTO_UPDATE_FIELDS': 'yes'}})
    assert found[0][0] == 'dj_cqrs.E011' and 'CQRS_AUTO_UPDATE_FIELDS' in found[0][1]
    found = ids({**base, 'master': {'correlation_function': 5}})
    assert 'correlation_function' in found[0][1]
    found = ids({**base, 'master': {'meta_function': 'tests.hooks.nothing_here'}})
    assert 'meta_function' in found[0][1]
    found = ids({**base, 'master': {'meta_function': 'tests.hooks.no_kwargs'}})
    assert found and '**kwargs' in found[0][1]
    assert ids({**base, 'master': []})[0] == (
        'dj_cqrs.E010', 'CQRS master configuration must be dict.')
    assert ids({**base, 'replica': 'x'})[0] == (
        'dj_cqrs.E020', 'CQRS replica configuration must be dict.')


def test_invalid_numbers_warn_and_fall_back_to_defaults(settings, cqrs_log):
    """Invalid TTL/retries: a W001 check with a hint, the original's log line, the default."""
    bad = {**settings.CQRS, 'master': {'CQRS_MESSAGE_TTL': -2},
           'replica': {'CQRS_MAX_RETRIES': 'x', 'CQRS_RETRY_DELAY': None}}
    found = ids(bad)
    assert [i for i, _ in found] == ['dj_cqrs.W001'] * 3
    settings.CQRS = bad
    parsed = conf.get_settings()
    assert parsed.master.message_ttl == 86400
    assert parsed.replica.max_retries == 30
    assert parsed.replica.retry_delay == 2
    assert 'WARNING Settings CQRS_MESSAGE_TTL=-2 is invalid, using default 86400.' in cqrs_log()
    assert 'WARNING Replica setting CQRS_MAX_RETRIES=x is invalid, using default 30.' in cqrs_log()


def test_configuration_error_is_improperly_configured_and_assertion_error():
    """Code that caught the original's AssertionError still catches our errors."""
    assert issubclass(ConfigurationError, ImproperlyConfigured)
    assert issubclass(ConfigurationError, AssertionError)


def test_ttl_none_means_messages_never_expire(settings, published):
    """CQRS_MESSAGE_TTL = None publishes expires null."""
    from tests.dj_master.models import Counter

    settings.CQRS = {**settings.CQRS, 'master': {'CQRS_MESSAGE_TTL': None}}
    Counter.objects.create(id=1)
    assert published()[0][1]['expires'] is None


pytestmark = pytest.mark.django_db(transaction=True)


# Start-up (issue 12 A7): an invalid configuration stops the process, as with the original. --

_STARTUP_SETTINGS = """
from tests.settings import *  # noqa: F403
{body}
"""


def _start(tmp_path, body, *args):
    """Load Django as gunicorn/uwsgi do (``get_wsgi_application``), or run ``manage.py args``,
    in a new process whose settings are ``tests.settings`` plus ``body``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / 'startup_settings.py').write_text(_STARTUP_SETTINGS.format(body=body))
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        'PYTHONPATH': os.pathsep.join([str(tmp_path), str(root)]),
        'DJANGO_SETTINGS_MODULE': 'startup_settings',
    }
    env.pop('DB', None)
    if args:
        command = [sys.executable, '-m', 'django', *args]
    else:
        code = 'from django.core.wsgi import get_wsgi_application; get_wsgi_application()'
        command = [sys.executable, '-c', code]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    'body, expected',
    [
        (
            "CQRS = {**CQRS, 'master': {'CQRS_AUTO_UPDATE_FIELDS': 'yes'}}",
            "dj_cqrs.E011: CQRS['master']['CQRS_AUTO_UPDATE_FIELDS'] must be bool, got 'yes'.",
        ),
        (
            "CQRS = {**CQRS, 'transport': 'no.such.Transport'}",
            "dj_cqrs.E004: settings.CQRS['transport'] = 'no.such.Transport' cannot be imported",
        ),
        ("CQRS = {**CQRS, 'queue': 7}", 'dj_cqrs.E006: CQRS queue must be string.'),
        ('del CQRS', 'dj_cqrs.E001: CQRS configuration must be set in Django project settings.'),
    ],
)
def test_invalid_settings_stop_a_wsgi_server_at_startup(tmp_path, body, expected):
    """Under gunicorn/uwsgi (no system checks) the app does not load: ImproperlyConfigured
    with the system check's id and text, naming the key."""
    result = _start(tmp_path, body)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('dj_cqrs.exceptions.ConfigurationError: settings.CQRS is invalid: ')
    assert expected in last


def test_manage_py_check_still_lists_the_problems_with_ids_and_hints(tmp_path):
    """``manage.py check`` is not stopped by the start-up validation: it reports every problem
    as a system check (id, text, hint) and exits non-zero."""
    body = "CQRS = {**CQRS, 'queue': 7, 'master': {'CQRS_AUTO_UPDATE_FIELDS': 'yes'}}"
    result = _start(tmp_path, body, 'check')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert '(dj_cqrs.E006) CQRS queue must be string.' in result.stderr
    assert "(dj_cqrs.E011) CQRS['master']['CQRS_AUTO_UPDATE_FIELDS'] must be bool" in result.stderr
    assert "HINT: CQRS['queue'] is a int." in result.stderr


def test_other_commands_stop_on_invalid_settings(tmp_path):
    """Any other command (here ``migrate --check``) stops at start-up, as with the original."""
    result = _start(tmp_path, "CQRS = {**CQRS, 'queue': 7}", 'migrate', '--check')
    assert result.returncode != 0
    assert 'dj_cqrs.E006: CQRS queue must be string.' in result.stderr


def test_project_without_cqrs_models_starts_whatever_cqrs_holds(tmp_path):
    """As the original (original.md §1.1): no CQRS model, no start-up validation."""
    body = (
        "INSTALLED_APPS = ['django.contrib.contenttypes', 'django.contrib.auth', 'dj_cqrs']\n"
        "CQRS = 'not a dict'"
    )
    result = _start(tmp_path, body)
    assert result.returncode == 0, result.stderr


def test_valid_settings_start(tmp_path):
    """The test project's own settings load under a WSGI server."""
    result = _start(tmp_path, '')
    assert result.returncode == 0, result.stderr


# Changed in place (issue 12 A8): test suites written for the original mutate settings.CQRS. --


@pytest.fixture
def own_cqrs(settings):
    """``settings.CQRS`` as a deep copy (so mutating it in place leaks into no other test)."""
    settings.CQRS = copy.deepcopy(settings.CQRS)
    conf.get_settings()  # parsed and cached before the test changes it
    return settings


@pytest.mark.django_db(transaction=True)
def test_master_option_changed_in_place_is_used_by_the_next_save(own_cqrs, published):
    """``settings.CQRS['master'][...] = ...`` as the original's suites do: the next save sees
    it, without ``override_settings``."""
    from tests.dj_master.models import Counter

    obj = Counter.objects.create(id=1)
    obj.value = 2
    obj.save(update_fields=['value'])
    assert len(published()) == 1  # update_fields saves are silent by default
    own_cqrs.CQRS['master']['CQRS_AUTO_UPDATE_FIELDS'] = True
    obj.value = 3
    obj.save(update_fields=['value'])
    assert [b['instance_data']['value'] for _, b in published()] == [0, 3]
    own_cqrs.CQRS['master']['meta_function'] = 'tests.hooks.meta_function'
    obj.save()
    assert published()[-1][1]['meta'] == {'from': 'tests', 'signal_type': 'SAVE'}


def test_direct_mutation_of_django_settings_is_seen(own_cqrs):
    """Mutating ``django.conf.settings.CQRS`` itself (no fixture): nested and top-level keys,
    and a new transport is resolved again."""
    from django.conf import settings as django_settings

    from dj_cqrs.transport import get_transport

    assert conf.get_settings().replica.max_retries == 2
    django_settings.CQRS['replica']['CQRS_MAX_RETRIES'] = 7
    assert conf.get_settings().replica.max_retries == 7
    django_settings.CQRS['replica'] = {'CQRS_MAX_RETRIES': 0}
    assert conf.get_settings().replica.max_retries == 0
    assert get_transport() is InProcessTransport
    django_settings.CQRS['transport'] = 'dj_cqrs.transport.TransportMock'
    assert get_transport() is TransportMock


@pytest.mark.parametrize('present', [True, False])
def test_unchanged_settings_are_not_parsed_again(own_cqrs, monkeypatch, present):
    """While nothing changes the parsed object is reused (no parsing, no reset per message),
    also in a project without any ``settings.CQRS``."""
    if not present:
        del own_cqrs.CQRS
    first = conf.get_settings()
    calls = []
    monkeypatch.setattr(conf, 'parse', lambda raw: calls.append(raw))
    monkeypatch.setattr(conf, '_reset_callbacks', [lambda: calls.append('reset')])
    for _ in range(100):
        assert conf.get_settings() is first
    assert calls == []
