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

# Thousands of quorum queues need file handles (about 3 each in RabbitMQ 3.10's file-handle
# cache, a tenant has two queues): the Debian default of 1,024 open files holds about 150 quorum
# tenants. A broker running with less than WAFLEET_RABBITMQ_MIN_OPEN_FILES (65536), or than this
# shell's hard limit where that is lower (a container may cap it; 20,000 still holds some 3,000
# quorum tenants), is restarted with it; the queues are durable, nothing is lost.
wanted_open_files=${WAFLEET_RABBITMQ_MIN_OPEN_FILES:-65536}
hard_open_files=$(ulimit -Hn)
if [ "$hard_open_files" = unlimited ] || [ "$hard_open_files" -ge "$wanted_open_files" ]; then
  min_open_files=$wanted_open_files
else
  min_open_files=$hard_open_files
fi
# The broker's limit as it reports it; a node that just started reports none for a few seconds.
open_files_limit() {
  local n
  for _ in $(seq 60); do
    n=$(curl -fsS -u guest:guest http://127.0.0.1:15672/api/nodes 2>/dev/null |
      python3 -c 'import json, sys; print(min(n.get("fd_total", 0) for n in json.load(sys.stdin)))' 2>/dev/null || true)
    [ -n "$n" ] && [ "$n" -gt 0 ] && { echo "$n"; return 0; }
    sleep 0.5
  done
}

# Starts the broker with the open-files limit above. Debian's rabbitmq-server switches to the
# rabbitmq user through su, whose pam_limits resets the soft limit to 1,024, so as root the limit
# is raised inside the su shell, as the rabbitmq user (up to the hard limit it inherits).
start_rabbitmq() {
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    ( cd /var/lib/rabbitmq &&
      su rabbitmq -s /bin/sh -c "ulimit -n $min_open_files && /usr/lib/rabbitmq/bin/rabbitmq-server -detached" )
  else
    ( ulimit -n "$min_open_files" && rabbitmq-server -detached )
  fi
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
  start_rabbitmq || die "could not start RabbitMQ"
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

# Stops the broker (killing it if it does not stop), starts it with the open-files limit, and
# waits until it serves the management API and can create a vhost again.
restart_rabbitmq() {
  timeout 60 rabbitmqctl stop >/dev/null 2>&1 || pkill -9 -u rabbitmq beam.smp || true
  for _ in $(seq 60); do port_open 5672 || break; sleep 0.5; done
  start_rabbitmq || die "could not start RabbitMQ with $min_open_files open files (ulimit -n needs root, or a hard limit that high)"
  wait_port 5672 RabbitMQ 240
  wait_port 15672 "RabbitMQ management" 120
  wait_management
  vhost_works || die "RabbitMQ still cannot create a vhost after a restart; see /var/log/rabbitmq"
}

wait_management
if ! vhost_works; then
  log "RabbitMQ answers but cannot create a vhost within 30 s: restarting it"
  restart_rabbitmq
fi

limit=$(open_files_limit || true)
if [ -n "$limit" ] && [ "$limit" -lt "$min_open_files" ]; then
  command -v rabbitmqctl >/dev/null || die "RabbitMQ runs with $limit open files (< $min_open_files) and rabbitmqctl is missing to restart it"
  log "RabbitMQ runs with an open-files limit of $limit (< $min_open_files): restarting it with $min_open_files"
  restart_rabbitmq
  limit=$(open_files_limit || true)
  [ -n "$limit" ] && [ "$limit" -ge "$min_open_files" ] || die "RabbitMQ restarted with ${limit:-an unknown} open-files limit, still < $min_open_files"
  log "RabbitMQ runs with $limit open files"
fi
