"""The master's models: every committed change is published to the replicas.

Three ways to describe what a replica receives:

- ``Category``: every field (the default), one message per save or delete.
- ``Product``: a ForeignKey, a serializer (``shop.serializers.ProductSerializer`` adds the
  category's name) and tracked fields (the previous ``name`` and ``price`` travel with an update).
- ``Customer``: every field; its replica builds its own columns from them (custom serialization).
"""

from django.db import models

from dj_cqrs.mixins import MasterMixin


class Category(MasterMixin):
    CQRS_ID = 'category'

    name = models.CharField(max_length=100)

    class Meta:
        verbose_name_plural = 'categories'

    def __str__(self) -> str:
        return self.name


class Product(MasterMixin):
    CQRS_ID = 'product'
    CQRS_SERIALIZER = 'shop.serializers.ProductSerializer'
    CQRS_TRACKED_FIELDS = ['name', 'price']

    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name='products')

    @classmethod
    def relate_cqrs_serialization(cls, queryset):
        # The serializer reads the category: fetch it in the same query.
        return queryset.select_related('category')

    def __str__(self) -> str:
        return self.name


class Customer(MasterMixin):
    CQRS_ID = 'customer'

    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    email = models.EmailField()

    def __str__(self) -> str:
        return f'{self.first_name} {self.last_name}'
