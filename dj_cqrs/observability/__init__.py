"""Observability: the default log receivers of the lifecycle signals, replica lag, status."""
