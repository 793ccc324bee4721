"""The library's own tables: the outbox (master), tombstones and apply state (replica)."""

from __future__ import annotations

from django.db import models


class OutboxMessage(models.Model):
    """A message kept for later publishing (broker unreachable, or transactional mode)."""

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    cqrs_id = models.CharField(max_length=255, db_index=True)
    signal_type = models.CharField(max_length=10)
    instance_pk = models.CharField(max_length=255)
    routing_key = models.CharField(max_length=512)
    body = models.TextField(help_text='The exact JSON body to publish.')
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default='')
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        app_label = 'dj_cqrs'
        ordering = ('id',)
        verbose_name = 'CQRS outbox message'

    def __str__(self) -> str:
        return f'{self.signal_type} {self.cqrs_id} pk={self.instance_pk} (#{self.pk})'


class Tombstone(models.Model):
    """A replica row deleted at ``cqrs_revision``: older SAVEs must not bring it back."""

    cqrs_id = models.CharField(max_length=255)
    instance_pk = models.CharField(max_length=255)
    cqrs_revision = models.IntegerField()
    deleted_at = models.DateTimeField(db_index=True)

    class Meta:
        app_label = 'dj_cqrs'
        constraints = [
            models.UniqueConstraint(fields=('cqrs_id', 'instance_pk'), name='dj_cqrs_tombstone_row')
        ]
        verbose_name = 'CQRS tombstone'

    def __str__(self) -> str:
        return f'{self.cqrs_id} pk={self.instance_pk} deleted at revision {self.cqrs_revision}'


class ReplicaState(models.Model):
    """Per ``cqrs_id``: what this replica applied last, and how far behind the master it was."""

    cqrs_id = models.CharField(max_length=255, unique=True)
    last_pk = models.CharField(max_length=255, blank=True, default='')
    last_revision = models.IntegerField(null=True)
    last_master_updated = models.DateTimeField(null=True)
    last_applied_at = models.DateTimeField(null=True)
    last_lag = models.FloatField(null=True, help_text='Seconds from master change to apply.')
    applied_count = models.BigIntegerField(default=0)

    class Meta:
        app_label = 'dj_cqrs'
        verbose_name = 'CQRS replica state'

    def __str__(self) -> str:
        return f'{self.cqrs_id}: {self.applied_count} applied'
