"""The benchmark replica of ``bench_item`` (plain replica: eligible for bulk apply)."""

import os

from django.db import models

from dj_cqrs.mixins import ReplicaMixin


class ItemReplica(ReplicaMixin):
    CQRS_ID = 'bench_item'

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    qty = models.IntegerField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    note = models.TextField(blank=True, default='')


if os.environ.get('BENCH_TRACE'):  # run.py --trace: stage timestamps (bench_trace.py)
    import bench_trace

    bench_trace.install('replica')
