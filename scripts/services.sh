#!/usr/bin/env bash
# Makes sure the local services the tests use are up, starting them if not.
# RabbitMQ 127.0.0.1:5672 (guest/guest) and PostgreSQL 127.0.0.1:5432 (trust).
set -euo pipefail

wait_for() { # name, seconds, command...
  local name=$1 secs=$2; shift 2
  for _ in $(seq "$secs"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "services: $name did not come up within ${secs}s" >&2
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5672; then
  echo "services: starting RabbitMQ" >&2
  rabbitmq-server -detached || true
  wait_for RabbitMQ 90 port_open 5672
fi
wait_for "RabbitMQ (ping)" 60 rabbitmq-diagnostics -q ping

if [ "${GROUPWATCH_NEEDS_POSTGRES:-1}" = 1 ] && ! port_open 5432; then
  echo "services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  wait_for PostgreSQL 60 port_open 5432
fi
