"""CPU a ``manage.py`` command spends before it does any work (issue #14).

Runs each command of the benchmark project (``benchmarks/project``) ``--runs`` times in a fresh
process and prints the mean user+system CPU of those children (``getrusage(RUSAGE_CHILDREN)``),
with the number of modules of ``dj_cqrs``, pika and kombu each loaded::

    python benchmarks/startup_cpu.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent / 'project'
COMMANDS = (
    ('replica', 'dj_cqrs.transport.RabbitMQTransport', ['check']),
    ('replica', 'dj_cqrs.transport.RabbitMQTransport', ['cqrs_bulk_dump', '--help']),
    ('master', 'dj_cqrs.transport.RabbitMQTransport', ['cqrs_bulk_dump', '--help']),
    ('master', 'dj_cqrs.transport.KombuTransport', ['check']),
)
_COUNT = (
    'import sys, runpy; sys.argv = ["manage.py", *sys.argv[1:]]\n'
    'try:\n    runpy.run_path("manage.py", run_name="__main__")\n'
    'except SystemExit:\n    pass\n'
    'names = [n for n in sys.modules if n.split(".")[0] in ("dj_cqrs", "pika", "kombu")]\n'
    'print("MODULES", *sorted({n.split(".")[0] for n in names}), len(names), file=sys.stderr)\n'
)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(role: str, transport: str, argv: list[str], runs: int) -> tuple[float, str]:
    env = {**os.environ, 'BENCH_ROLE': role, 'BENCH_TRANSPORT': transport}
    before = _cpu()
    for _ in range(runs):
        subprocess.run(
            [sys.executable, 'manage.py', *argv], cwd=PROJECT, env=env, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    cpu = (_cpu() - before) / runs
    proc = subprocess.run(
        [sys.executable, '-c', _COUNT, *argv], cwd=PROJECT, env=env, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    modules = [line for line in proc.stderr.splitlines() if line.startswith('MODULES')]
    return cpu, modules[-1][8:] if modules else '?'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=5)
    args = parser.parse_args()
    print('| role | transport | command | CPU (s, mean) | modules loaded |')
    print('|---|---|---|---|---|')
    for role, transport, argv in COMMANDS:
        cpu, modules = measure(role, transport, argv, args.runs)
        name = transport.rsplit('.', 1)[1]
        print(f'| {role} | {name} | `{" ".join(argv)}` | {cpu:.3f} | {modules} |')


if __name__ == '__main__':
    main()
