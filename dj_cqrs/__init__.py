"""dj_cqrs: Django models replicated between services through a message broker."""

__version__ = '3.1.0.post1'
