#!/usr/bin/env bash
# The README's demo command: puts the library in .venv (once), then runs the scripted demo of
# examples/demo_project (a master and a replica service as two processes; no broker needed).
#   bash examples/demo.sh                                           # Kombu's filesystem:// broker
#   bash examples/demo.sh --broker amqp://guest:guest@127.0.0.1:5672//    # over RabbitMQ
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import dj_cqrs, django, kombu, pika, ujson, dateutil' 2>/dev/null; then
  echo "Installing dj_cqrs and its dependencies into .venv ..."
  .venv/bin/pip install -q -e .
fi
exec .venv/bin/python examples/demo_project/run_demo.py "$@"
