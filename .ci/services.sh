#!/usr/bin/env bash
# Start RabbitMQ, PostgreSQL and Redis when they are not running (CI machine, fresh session).
set -uo pipefail

wait_port() {  # host port seconds
  for _ in $(seq 1 "$3"); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

if ! wait_port 127.0.0.1 5432 1; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_port 127.0.0.1 5432 30 || echo "PostgreSQL did not start"
fi
if ! wait_port 127.0.0.1 6379 1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_port 127.0.0.1 6379 15 || echo "Redis did not start"
fi
if ! wait_port 127.0.0.1 5672 1; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_port 127.0.0.1 5672 90 || echo "RabbitMQ did not start"
fi
# RabbitMQ may have been left stopped (stop_app) by an interrupted fault-injection test.
if command -v rabbitmqctl >/dev/null 2>&1; then
  rabbitmqctl -q status >/dev/null 2>&1 && rabbitmqctl -q start_app >/dev/null 2>&1 || true
  wait_port 127.0.0.1 5672 60 || echo "RabbitMQ is not listening"
fi
exit 0
