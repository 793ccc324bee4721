from django.contrib import admin

from dj_cqrs.admin_mixins import CQRSAdminMasterSyncMixin
from tests.dj_master.models import GoldenParent


@admin.register(GoldenParent)
class GoldenParentAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):
    list_display = ('id', 'name', 'cqrs_revision')
