"""The admin mixin under the path the original's README documents."""

from dj_cqrs.admin import CQRSAdminMasterSyncMixin

__all__ = ['CQRSAdminMasterSyncMixin']
