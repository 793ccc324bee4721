#!/usr/bin/env python
"""manage.py of the benchmark services (settings: ``bench_settings``, role from BENCH_ROLE)."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent)]

if __name__ == '__main__':
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'bench_settings')
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
