"""The benchmark master: one CQRS model and the same model without CQRS."""

import os

from django.db import models

from dj_cqrs.mixins import MasterMixin


class Item(MasterMixin):
    CQRS_ID = 'bench_item'

    name = models.CharField(max_length=100)
    qty = models.IntegerField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    note = models.TextField(blank=True, default='')


class PlainItem(models.Model):
    """Same fields, plain Django: the baseline of the produce overhead ratio."""

    name = models.CharField(max_length=100)
    qty = models.IntegerField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    note = models.TextField(blank=True, default='')


if os.environ.get('BENCH_TRACE'):  # run.py --trace: stage timestamps (bench_trace.py)
    import bench_trace

    bench_trace.install('master')
