#!/usr/bin/env bash
# Start RabbitMQ, PostgreSQL, Redis and MariaDB when they are not running (CI machine, fresh
# session); create the MariaDB database and user of the tests; install what mysqlclient needs
# to build.
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
if ! wait_port 127.0.0.1 3306 1 && [ -x /usr/sbin/mariadbd ]; then
  echo "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_port 127.0.0.1 3306 60 || echo "MariaDB did not start"
fi
if command -v mariadb >/dev/null 2>&1 && wait_port 127.0.0.1 3306 1; then
  # The tests' database and user (tests/settings.py: DB=mariadb, MYSQL_USER/MYSQL_PASSWORD):
  # every database named cqrs* (the integration and benchmark replicas) or test_cqrs_* (one per
  # unit-suite run).
  mariadb -uroot <<'SQL' || echo "could not create the MariaDB database and user"
CREATE DATABASE IF NOT EXISTS cqrs_tests CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'cqrs'@'localhost' IDENTIFIED BY 'cqrs';
CREATE USER IF NOT EXISTS 'cqrs'@'127.0.0.1' IDENTIFIED BY 'cqrs';
GRANT ALL PRIVILEGES ON `cqrs%`.* TO 'cqrs'@'localhost', 'cqrs'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `test\_cqrs\_%`.* TO 'cqrs'@'localhost', 'cqrs'@'127.0.0.1';
SQL
fi
# mysqlclient (the MariaDB/MySQL driver of the tests) compiles against the client library.
if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null
then
  echo "installing the MariaDB client headers for mysqlclient"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q pkg-config libmariadb-dev >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q pkg-config libmariadb-dev >/dev/null; } \
    || echo "could not install libmariadb-dev: mysqlclient will not build"
fi
# RabbitMQ may have been left stopped (stop_app) by an interrupted fault-injection test.
if command -v rabbitmqctl >/dev/null 2>&1; then
  rabbitmqctl -q status >/dev/null 2>&1 && rabbitmqctl -q start_app >/dev/null 2>&1 || true
  wait_port 127.0.0.1 5672 60 || echo "RabbitMQ is not listening"
fi
exit 0
