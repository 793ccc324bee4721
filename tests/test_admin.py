"""The admin "Synchronize selected ... via CQRS" action on a real changelist."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import RequestFactory, TestCase

from dj_cqrs.admin import CQRSAdminMasterSyncMixin
from dj_cqrs.admin_mixins import CQRSAdminMasterSyncMixin as DocumentedPath
from dj_cqrs.transport import InProcessTransport
from tests.dj_master.models import Filtered, GoldenParent

pytestmark = pytest.mark.django_db

CHANGELIST = '/admin/dj_master/goldenparent/'


@pytest.fixture(autouse=True)
def _no_apply():
    InProcessTransport.apply = False


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser('admin', 'admin@example.com', 'pw')
    client.force_login(user)
    return client


@pytest.fixture
def parents():
    for pk in (1, 2, 3):
        GoldenParent.objects.create(id=pk, name=f'p{pk}')
    InProcessTransport.reset()


def test_both_import_paths_give_the_same_mixin():
    """``dj_cqrs.admin_mixins`` (the README's path) re-exports ``dj_cqrs.admin``'s mixin."""
    assert DocumentedPath is CQRSAdminMasterSyncMixin


def test_changelist_offers_the_action_with_its_label(staff_client, parents):
    """The changelist's action menu holds ``sync_items`` with the original's label."""
    page = staff_client.get(CHANGELIST)
    assert page.status_code == 200
    html = page.content.decode()
    assert (
        '<option value="sync_items">Synchronize selected golden parents via CQRS</option>' in html
    )


def test_action_syncs_the_selected_rows_and_shows_the_message(staff_client, parents, published):
    """Posting the action sends one SYNC per selected row and shows ``N successfully synced``."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        page = staff_client.post(
            CHANGELIST,
            {'action': 'sync_items', '_selected_action': ['1', '3'], 'index': '0'},
            follow=True,
        )
    assert page.status_code == 200
    sent = sorted((key, body['signal_type'], body['instance_pk']) for key, body in published())
    assert sent == [('golden_parent', 'SYNC', 1), ('golden_parent', 'SYNC', 3)]
    messages = [str(m) for m in page.context['messages']]
    assert messages == ['2 successfully synced. 0 failed: []']


class _FilteredAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):
    pass


def _request():
    request = RequestFactory().post('/')
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def test_action_lists_the_rows_that_did_not_sync(published):
    """Rows whose ``cqrs_sync()`` returns False are counted and listed with their repr."""
    shown = Filtered.objects.create(name='shown', public=True)
    hidden = Filtered.objects.create(name='hidden', public=False)
    InProcessTransport.reset()
    model_admin = _FilteredAdmin(Filtered, admin.site)
    request = _request()
    with TestCase.captureOnCommitCallbacks(execute=True):
        model_admin.sync_items(request, Filtered.objects.order_by('pk'))
    assert [body['instance_pk'] for _, body in published()] == [shown.pk]
    (message,) = [str(m) for m in request._messages]
    assert message == f'1 successfully synced. 1 failed: [{hidden!r}]'


def test_sync_queryset_hook_adjusts_what_is_synced(published):
    """``_cqrs_sync_queryset`` can narrow the rows; the total still counts the selection."""

    class OnlyFirst(_FilteredAdmin):
        def _cqrs_sync_queryset(self, queryset):
            return queryset.order_by('pk')[:1]

    Filtered.objects.create(name='a')
    Filtered.objects.create(name='b')
    InProcessTransport.reset()
    request = _request()
    with TestCase.captureOnCommitCallbacks(execute=True):
        OnlyFirst(Filtered, admin.site).sync_items(request, Filtered.objects.all())
    assert len(published()) == 1
    assert [str(m) for m in request._messages] == ['2 successfully synced. 0 failed: []']


def test_get_actions_adds_sync_items_and_respects_no_actions():
    """``sync_items`` is appended to the admin's actions; ``actions = None`` keeps none."""

    class NoActions(_FilteredAdmin):
        actions = None

    request = _request()
    request.user = User(is_superuser=True, is_staff=True)
    actions = _FilteredAdmin(Filtered, admin.site).get_actions(request)
    assert 'sync_items' in actions
    action = actions['sync_items']
    description = getattr(action, 'description', None) or action[2]  # Django 6.1: an Action
    assert str(description) == 'Synchronize selected %(verbose_name_plural)s via CQRS'
    assert NoActions(Filtered, admin.site).get_actions(request) == {}
