from django.contrib import admin

from dj_cqrs.admin_mixins import CQRSAdminMasterSyncMixin
from shop.models import Category, Customer, Product


# CQRSAdminMasterSyncMixin adds the action "Synchronize selected ... via CQRS".
@admin.register(Category)
class CategoryAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):
    list_display = ('id', 'name', 'cqrs_revision', 'cqrs_updated')


@admin.register(Product)
class ProductAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):
    list_display = ('id', 'name', 'price', 'category', 'cqrs_revision', 'cqrs_updated')


@admin.register(Customer)
class CustomerAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):
    list_display = ('id', 'first_name', 'last_name', 'email', 'cqrs_revision', 'cqrs_updated')
