"""Public path of django-cqrs 3.1: apply a payload to the replica (see ``consumer.route``)."""

from dj_cqrs.consumer.route import consume, route_signal_to_replica_model

__all__ = ['consume', 'route_signal_to_replica_model']
