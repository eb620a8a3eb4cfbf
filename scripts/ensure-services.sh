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

wait_management() {
  # The management API answers 503 for a moment after the plugin starts.
  for _ in $(seq 60); do
    curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "RabbitMQ management API at http://127.0.0.1:15672 does not answer for guest/guest"
}

# Every test makes a vhost. A broker whose ports answer can still be wedged (seen after a node
# of a test cluster was killed: vhost creation hung for good), and then every test would hang
# until its timeout. A vhost made and deleted within 30 s says it works.
vhost_works() {
  local probe="wafleet-services-probe-$$"
  curl -fsS --max-time 30 -u guest:guest -X PUT "http://127.0.0.1:15672/api/vhosts/$probe" >/dev/null 2>&1 &&
    curl -fsS --max-time 30 -u guest:guest -X DELETE "http://127.0.0.1:15672/api/vhosts/$probe" >/dev/null 2>&1
}

wait_management
if ! vhost_works; then
  log "RabbitMQ answers but cannot create a vhost within 30 s: restarting it"
  timeout 60 rabbitmqctl stop >/dev/null 2>&1 || pkill -9 -u rabbitmq beam.smp || true
  for _ in $(seq 60); do port_open 5672 || break; sleep 0.5; done
  if command -v service >/dev/null && service rabbitmq-server start >/dev/null 2>&1; then :; else
    rabbitmq-server -detached || die "could not start RabbitMQ"
  fi
  wait_port 5672 RabbitMQ 240
  wait_port 15672 "RabbitMQ management" 120
  wait_management
  vhost_works || die "RabbitMQ still cannot create a vhost after a restart; see /var/log/rabbitmq"
fi
