from django.contrib import admin

from catalog.models import Category, CustomerCard, ProductCard


class ReadOnlyAdmin(admin.ModelAdmin):
    """Replicated rows are written by cqrs_consume only: look, don't touch."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Category)
class CategoryAdmin(ReadOnlyAdmin):
    list_display = ('id', 'name', 'cqrs_revision', 'cqrs_updated')


@admin.register(ProductCard)
class ProductCardAdmin(ReadOnlyAdmin):
    list_display = ('id', 'title', 'price', 'previous_price', 'category_name', 'cqrs_revision')


@admin.register(CustomerCard)
class CustomerCardAdmin(ReadOnlyAdmin):
    list_display = ('id', 'full_name', 'email_domain', 'cqrs_revision')
