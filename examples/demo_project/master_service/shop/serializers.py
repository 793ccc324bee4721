"""What a ``Product`` message carries.

``CQRS_SERIALIZER`` names any class that takes the instance and has a ``.data`` dict; a Django
REST framework ``ModelSerializer`` fits as well. The library adds ``cqrs_revision`` and
``cqrs_updated`` to the dict.
"""

from typing import Any


class ProductSerializer:
    def __init__(self, instance: Any) -> None:
        self.instance = instance

    @property
    def data(self) -> dict[str, Any]:
        product = self.instance
        return {
            'id': product.pk,
            'name': product.name,
            'price': product.price,  # a Decimal stays exact on the wire: 7.49, not 7.4900000001
            'category': product.category_id,
            'category_name': product.category.name,
        }
