"""Old home of :mod:`dj_cqrs.routing` (kept until every importer uses the leaf module)."""

from dj_cqrs.routing import bindings_for, queue_from_routing_key, routing_key_for

__all__ = ['bindings_for', 'queue_from_routing_key', 'routing_key_for']
