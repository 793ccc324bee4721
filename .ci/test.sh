#!/usr/bin/env bash
# The README's test command. Installs into virtualenvs inside the checkout, then runs:
# lint, type check, the unit suite on SQLite, PostgreSQL and MariaDB, the integration suite (real RabbitMQ,
# PostgreSQL, MariaDB and Redis, services as separate processes), the RabbitMQ cluster stage
# (three local nodes), the docs build, and the unit suite again under Python 3.12 + the newest
# Django 6.x and under Django 4.2.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
# The MariaDB user .ci/services.sh creates (unit suite with DB=mariadb, integration replica).
export MYSQL_USER="${MYSQL_USER:-cqrs}" MYSQL_PASSWORD="${MYSQL_PASSWORD:-cqrs}"

venv() {  # venv DIR PYTHON [extra pip args...]
  local dir=$1 python=$2
  shift 2
  if [ ! -x "$dir/bin/python" ]; then
    "$python" -m venv "$dir"
  fi
  "$dir/bin/pip" install -q --upgrade pip >/dev/null
  "$dir/bin/pip" install -q "$@"
}

step() { echo; echo "== $*"; }

step "install (.venv, $(python3 --version))"
venv .venv python3 -e '.[dev]'

step "ruff check"
.venv/bin/ruff check .

step "mypy (django-stubs; config in pyproject.toml)"
.venv/bin/mypy

step "unit suite on SQLite"
.venv/bin/pytest -q tests

step "unit suite on PostgreSQL"
DB=postgres .venv/bin/pytest -q tests

step "unit suite on MariaDB (mysqlclient)"
DB=mariadb .venv/bin/pytest -q tests

if [ -d integration_tests ] && ls integration_tests/test_*.py >/dev/null 2>&1; then
  step "integration suite (RabbitMQ, PostgreSQL, MariaDB, Redis; separate processes)"
  .venv/bin/pytest -q -m 'not cluster' integration_tests
fi

if ls integration_tests/test_cluster_*.py >/dev/null 2>&1; then
  # Starts three extra RabbitMQ nodes (ports 5701-5703, 25701-25703) of the installed
  # rabbitmq-server, clusters them, runs the node-loss scenarios and removes the nodes.
  step "RabbitMQ cluster: 3 local nodes, quorum queues, node loss (integration_tests/test_cluster_*.py)"
  .venv/bin/pytest -q -rP -m cluster integration_tests
fi

if [ -f mkdocs.yml ]; then
  step "docs: mkdocs build --strict"
  .venv/bin/mkdocs build --strict -q -d "$(mktemp -d)"
fi

PY312=$(PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null \
  || ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | head -n1 \
  || command -v python3.12 || true)
if [ -n "$PY312" ]; then
  step "unit suite on Python 3.12 + Django 6.x"
  venv .venv-py312-dj6 "$PY312" 'django>=6,<7' -e '.[test]'
  .venv-py312-dj6/bin/python -c 'import django; print("Django", django.__version__)'
  .venv-py312-dj6/bin/pytest -q tests
else
  echo "Python 3.12 not found: cannot run the Django 6 matrix" >&2
  exit 1
fi

step "unit suite on Django 4.2"
venv .venv-dj42 python3 'django>=4.2,<4.3' -e '.[test]'
.venv-dj42/bin/python -c 'import django; print("Django", django.__version__)'
.venv-dj42/bin/pytest -q tests
