#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ (with the management and prometheus plugins) answer on
# 127.0.0.1, starting the local Debian services if they are down. Used by the tests, the demo
# and CI. Fails loudly with what to do when a service cannot be started.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2 tries=${3:-120}
  for _ in $(seq "$tries"); do
    port_open "$port" && return 0
    sleep 0.5
  done
  die "$what did not open port $port"
}

if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || die "PostgreSQL is down and pg_ctlcluster is missing: install postgresql or set WAFLEET_TEST_PG_ADMIN_URL"
  version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || die "could not start PostgreSQL"
  wait_port 5432 PostgreSQL
fi

if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || die "RabbitMQ is down and rabbitmq-server is missing: install rabbitmq-server or set AMQP_URL"
  log "starting RabbitMQ"
  rabbitmq-server -detached || die "could not start RabbitMQ"
  wait_port 5672 RabbitMQ 240
fi

if ! port_open 15672; then
  command -v rabbitmq-plugins >/dev/null || die "the RabbitMQ management API (15672) is down and rabbitmq-plugins is missing"
  log "enabling rabbitmq_management and rabbitmq_prometheus"
  for _ in $(seq 60); do
    rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus >/dev/null 2>&1 && break
    sleep 1
  done
  wait_port 15672 "RabbitMQ management" 120
fi

# The management API answers 503 for a moment after the plugin starts.
for _ in $(seq 60); do
  if curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
die "RabbitMQ management API at http://127.0.0.1:15672 does not answer for guest/guest"
