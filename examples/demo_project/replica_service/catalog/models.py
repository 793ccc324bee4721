"""The replica's models: read-only copies kept up to date by ``manage.py cqrs_consume``.

- ``Category``: a default replica (same fields as the master, applied as they come).
- ``ProductCard``: a mapped replica (``CQRS_MAPPING``: the master's ``name`` is stored in
  ``title``) with a ForeignKey to the replicated category; it also keeps the previous price
  that the master's tracked fields send with each update.
- ``CustomerCard``: custom serialization (``CQRS_CUSTOM_SERIALIZATION``): the hooks get the
  master's fields as they are and build other columns from them.
"""

from django.db import models

from dj_cqrs.mixins import ReplicaMixin


class Category(ReplicaMixin):
    CQRS_ID = 'category'

    id = models.IntegerField(primary_key=True)  # the master's primary key, never generated here
    name = models.CharField(max_length=100)

    class Meta:
        verbose_name_plural = 'categories'

    def __str__(self) -> str:
        return self.name


class ProductCard(ReplicaMixin):
    CQRS_ID = 'product'
    CQRS_MAPPING = {  # master field -> replica field; other master fields are dropped
        'id': 'id',
        'name': 'title',
        'price': 'price',
        'category': 'category',
        'category_name': 'category_name',
    }

    id = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    previous_price = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    # The master's category id arrives as a plain value. Without a database constraint the
    # product can be stored even if its category has not been replicated yet.
    category = models.ForeignKey(
        Category, null=True, on_delete=models.DO_NOTHING, db_constraint=False
    )
    category_name = models.CharField(max_length=100)

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        # previous_data: the master's CQRS_TRACKED_FIELDS that changed, with their old values.
        if previous_data and previous_data.get('price') is not None:
            self.previous_price = previous_data['price']
        return super().cqrs_update(sync, mapped_data, previous_data=previous_data, meta=meta)

    def __str__(self) -> str:
        return self.title


class CustomerCard(ReplicaMixin):
    CQRS_ID = 'customer'
    CQRS_CUSTOM_SERIALIZATION = True

    id = models.IntegerField(primary_key=True)
    full_name = models.CharField(max_length=200)
    email_domain = models.CharField(max_length=100)

    @staticmethod
    def columns(data: dict) -> dict:
        """This replica's columns, built from the master's fields."""
        return {
            'full_name': f'{data["first_name"]} {data["last_name"]}',
            'email_domain': data['email'].rpartition('@')[2],
            'cqrs_revision': data['cqrs_revision'],
            'cqrs_updated': data['cqrs_updated'],
        }

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        return cls.objects.create(id=mapped_data['id'], **cls.columns(mapped_data))

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        for name, value in self.columns(mapped_data).items():
            setattr(self, name, value)
        self.save()
        return self

    def __str__(self) -> str:
        return self.full_name
