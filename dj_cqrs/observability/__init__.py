"""Observability: the default log receivers of the lifecycle signals, replica lag, status.

- :mod:`dj_cqrs.observability.logging` turns the lifecycle signals of :mod:`dj_cqrs.signals`
  into the log lines operators know from django-cqrs (``CQRS is published: ...``).
- :mod:`dj_cqrs.observability.lag` keeps, per ``cqrs_id``, what this replica applied last and
  how far behind the master it was (table ``ReplicaState``).
- :mod:`dj_cqrs.observability.status` collects what ``manage.py cqrs_status`` prints;
  :mod:`dj_cqrs.observability.render` prints it.
"""
