#!/usr/bin/env bash
# Renders docs/dashboard.png, the picture of the Grafana dashboard in docs/runbooks.md, from a real run:
#
#   1. starts, on 127.0.0.1 only, the WA Bridges simulator (rate limits on, from_me echoes on),
#      ingest (its broker connection goes through a small TCP proxy so an outage can be
#      simulated without touching the shared RabbitMQ), the worker (with the isolation canary)
#      and a temporary Prometheus scraping ingest, worker and rabbitmq_prometheus's per-queue
#      endpoint, with the labels the ServiceMonitors add in Kubernetes (namespace, pod, job);
#   2. seeds six tenants and two canary tenants in their own database and vhost and drives
#      WAFLEET_DASHBOARD_LOAD_SECS (default 240) of traffic through their simulated bridges,
#      with incidents: a lunch rush, a URL rotation, a failing HTTP bot, a worker replaced,
#      429s and a lost response from WA Bridges, poison messages, a 20 s broker outage seen by
#      ingest, a disabled tenant, and junk requests (scanners, forged tokens, broken clients);
#   3. runs every panel's PromQL of deploy/grafana/wafleet-dashboard.json against that Prometheus
#      and draws the dashboard with matplotlib (Grafana itself is not needed).
#
# Takes about 5 minutes (plus the first build and, once, the tools). Everything it starts is
# stopped and its database, vhost and temporary files removed on exit, also on failure or Ctrl-C.
# Logs stay in target/render-dashboard/. Exits non-zero, saying why, when anything goes wrong.
#
# Tools, installed on first use into ${WAFLEET_DASHBOARD_TOOLS:-$HOME/.cache/wafleet-dashboard-tools}:
#   * a venv with scripts/render_dashboard.requirements.txt (matplotlib, pinned, from PyPI);
#   * the prometheus binary extracted from Debian's `prometheus` package (apt-get download +
#     dpkg-deb; nothing is installed or started as a service), unless `prometheus` is on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD_SECS=${WAFLEET_DASHBOARD_LOAD_SECS:-240}
OUT=${WAFLEET_DASHBOARD_OUT:-docs/dashboard.png}
TOOLS=${WAFLEET_DASHBOARD_TOOLS:-$HOME/.cache/wafleet-dashboard-tools}
PORT=${WAFLEET_DASHBOARD_PORT_BASE:-18170}
INGEST_PORT=$PORT PROXY_PORT=$((PORT + 1)) WORKER_PORT=$((PORT + 2)) SIM_PORT=$((PORT + 3))
BOT_PORT=$((PORT + 4)) PROM_PORT=$((PORT + 5)) INGEST_OPS_PORT=$((PORT + 6))
SCRAPE=5
NAME=wafleet_dashboard # database and vhost
API_KEY=sk_dashboard_local
STATE=target/render-dashboard
REQ=scripts/render_dashboard.requirements.txt
HELPER=scripts/render_dashboard.py
begin=$SECONDS

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'render-dashboard: ERROR: %s\n' "$*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

command -v python3 >/dev/null || die "python3 is required"
[ "$LOAD_SECS" -ge 120 ] 2>/dev/null || die "WAFLEET_DASHBOARD_LOAD_SECS must be a number of seconds >= 120"
for port in "$INGEST_PORT" "$PROXY_PORT" "$WORKER_PORT" "$SIM_PORT" "$BOT_PORT" "$PROM_PORT" "$INGEST_OPS_PORT"; do
  port_open "$port" && die "port $port is in use; set WAFLEET_DASHBOARD_PORT_BASE (7 ports from it)"
done

# --- tools ------------------------------------------------------------------------------------
VENV=$TOOLS/venv
mkdir -p "$TOOLS/bin"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$want" != "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" ] || [ ! -x "$VENV/bin/python" ]; then
  say "installing matplotlib into $VENV (pip, PyPI)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --disable-pip-version-check --no-input -q -r "$REQ" || die "pip install -r $REQ failed"
  echo "$want" >"$VENV/.requirements.sha256"
fi
PY=$VENV/bin/python
if command -v prometheus >/dev/null; then
  PROMETHEUS=$(command -v prometheus)
else
  PROMETHEUS=$TOOLS/bin/prometheus
  if [ ! -x "$PROMETHEUS" ]; then
    say "extracting prometheus from Debian's prometheus package (apt-get download, no install)"
    dl=$(mktemp -d)
    if ! (cd "$dl" && apt-get download -q prometheus >/dev/null 2>&1); then
      apt-get update -qq || { rm -rf "$dl"; die "apt-get update failed (needs root and the Debian mirror)"; }
      (cd "$dl" && apt-get download -q prometheus >/dev/null) || { rm -rf "$dl"; die "apt-get download prometheus failed"; }
    fi
    dpkg-deb -x "$dl"/prometheus_*.deb "$dl/x" || { rm -rf "$dl"; die "cannot unpack the prometheus .deb"; }
    install -m 0755 "$dl/x/usr/bin/prometheus" "$PROMETHEUS"
    rm -rf "$dl"
  fi
fi
"$PROMETHEUS" --version >/dev/null 2>&1 || die "$PROMETHEUS does not run"

# --- services and binaries ----------------------------------------------------------------------
say "services"
scripts/ensure-services.sh
curl -fsS -o /dev/null http://127.0.0.1:15692/metrics \
  || die "rabbitmq_prometheus does not answer on 127.0.0.1:15692 (rabbitmq-plugins enable rabbitmq_prometheus)"
say "building (the demo's and the tests' profile, a no-op when they ran)"
cargo build --workspace --bins --locked
BIN=target/debug

# --- cleanup: everything started below is stopped, the database and vhost dropped ---------------
mkdir -p "$STATE" "$(dirname "$OUT")"
rm -f "$STATE"/*.log
TMP=$(mktemp -d -t wafleet-dashboard.XXXXXX)
PIDS=()
drop_db_and_vhost() {
  psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists $NAME with (force)" >/dev/null 2>&1 || true
  curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/vhosts/$NAME" >/dev/null 2>&1 || true
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Last started first, each one gone before the next (ingest stops before its broker proxy).
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  drop_db_and_vhost
  rm -rf "$TMP"
  if [ "$status" -ne 0 ]; then
    printf 'render-dashboard: FAILED after %d s; logs in %s/:\n' "$((SECONDS - begin))" "$STATE" >&2
    for f in "$STATE"/*.log; do [ -s "$f" ] && { echo "--- $f (last lines)" >&2; tail -n 5 "$f" >&2; }; done
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_bg() { # name, command...: runs the command in the background, logging to $STATE/name.log
  local name=$1; shift
  "$@" >"$STATE/$name.log" 2>&1 &
  PIDS+=($!)
}
wait_http() {
  for _ in $(seq 120); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.5; done
  die "$2 did not become ready at $1 (see $STATE/$2.log)"
}

say "recreating database and vhost '$NAME'"
drop_db_and_vhost
psql -h 127.0.0.1 -U postgres -d postgres -qc "create database $NAME"
curl -fsS -u guest:guest -X PUT "http://127.0.0.1:15672/api/vhosts/$NAME" >/dev/null
curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "http://127.0.0.1:15672/api/permissions/$NAME/guest" >/dev/null

export WAFLEET_SIGNING_KEY; WAFLEET_SIGNING_KEY="dash:$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')"
export DATABASE_URL=postgres://wafleet_worker@127.0.0.1:5432/$NAME
export ADMIN_DATABASE_URL=postgres://wafleet_admin@127.0.0.1:5432/$NAME
export MIGRATE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$NAME
export AMQP_URL=amqp://guest:guest@127.0.0.1:5672/$NAME
export RABBITMQ_API_URL=http://guest:guest@127.0.0.1:15672
export WA_API_KEY=$API_KEY WA_API_BASE_URL=http://127.0.0.1:$SIM_PORT
export WAFLEET_INGEST_ADDR=127.0.0.1:$INGEST_PORT WAFLEET_INGEST_OPS_ADDR=127.0.0.1:$INGEST_OPS_PORT
export WAFLEET_WORKER_ADDR=127.0.0.1:$WORKER_PORT
export WAFLEET_SIM_ADDR=127.0.0.1:$SIM_PORT
export WAFLEET_SPOOL_DIR=$TMP/spool
export RUST_LOG=${RUST_LOG:-warn}
INGEST=http://127.0.0.1:$INGEST_PORT
SIM=http://127.0.0.1:$SIM_PORT

say "migrating"
$BIN/wafleet migrate >"$STATE/migrate.log" 2>&1 || die "wafleet migrate failed (see $STATE/migrate.log)"

say "starting the simulator, the broker proxy, ingest and Prometheus (logs in $STATE/)"
start_bg sim $BIN/wafleet-sim --api-key "$API_KEY" --echo-from-me
start_bg amqp-proxy "$PY" "$HELPER" amqp-proxy --listen "127.0.0.1:$PROXY_PORT" --upstream 127.0.0.1:5672
PROXY_PID=${PIDS[-1]}
for _ in $(seq 40); do port_open "$PROXY_PORT" && break; sleep 0.25; done
AMQP_URL=amqp://guest:guest@127.0.0.1:$PROXY_PORT/$NAME start_bg ingest $BIN/wafleet-ingest

cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: ${SCRAPE}s
  scrape_timeout: 4s
# The labels the ServiceMonitors of deploy/ get in Kubernetes, so the dashboard's queries run as is.
scrape_configs:
  - job_name: wafleet-ingest
    static_configs:
      - targets: ["127.0.0.1:$INGEST_OPS_PORT"]
        labels: {namespace: wafleet, pod: wafleet-ingest-0, service: wafleet-ingest}
  - job_name: wafleet-worker
    static_configs:
      - targets: ["127.0.0.1:$WORKER_PORT"]
        labels: {namespace: wafleet, pod: wafleet-worker-0, service: wafleet-worker}
  # As deploy/k8s/examples/rabbitmq-servicemonitor.yaml: per-queue families, ~5 series per queue.
  - job_name: rabbitmq-queues
    metrics_path: /metrics/detailed
    params:
      family: [queue_coarse_metrics, queue_consumer_count, queue_metrics]
      vhost: ["$NAME"]
    static_configs:
      - targets: ["127.0.0.1:15692"]
        labels: {namespace: rabbitmq, pod: rabbitmq-0}
    metric_relabel_configs:
      - source_labels: [__name__]
        action: keep
        regex: rabbitmq_detailed_queue_(messages|messages_ready|messages_unacked|consumers|head_message_timestamp)
EOF
start_bg prometheus "$PROMETHEUS" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn
PROM=http://127.0.0.1:$PROM_PORT
wait_http "$SIM/_sim/bridges" sim
wait_http "http://127.0.0.1:$INGEST_OPS_PORT/readyz" ingest
wait_http "$PROM/-/ready" prometheus

say "seeding tenants on simulated bridges"
"$PY" "$HELPER" setup --sim "$SIM" --ingest "$INGEST" --wafleet $BIN/wafleet --api-key "$API_KEY" \
  --bot-port "$BOT_PORT" --secrets-out "$TMP/bot-secrets.json"

# The worker runs under a restart loop, as under a Deployment: the scenario stops it once and the
# "new pod" starts 20 s later.
run_worker() {
  local wpid='' spid=''
  trap 'kill $wpid $spid 2>/dev/null; wait $wpid 2>/dev/null; exit 0' TERM
  while :; do
    $BIN/wafleet-worker & wpid=$!
    echo "$wpid" >"$TMP/worker.pid"
    wait "$wpid" || true
    echo "[render-dashboard] worker exited; restarting in 20 s"
    sleep 20 & spid=$!
    wait "$spid" || true
  done
}
say "starting the worker (isolation canary every 30 s)"
WAFLEET_CANARY_TENANTS=canary_a,canary_b WAFLEET_CANARY_INTERVAL_SECS=30 WAFLEET_CANARY_INGEST_URL=$INGEST \
  WAFLEET_CANARY_CHAT=447700900999 WAFLEET_HTTP_BOT_ALLOW_PRIVATE=true WAFLEET_HTTP_BOT_PORTS=$BOT_PORT \
  start_bg worker run_worker
wait_http "http://127.0.0.1:$WORKER_PORT/readyz" worker

# Every target must be scraped before the run counts.
for _ in $(seq 30); do
  up=$(curl -fsS "$PROM/api/v1/query?query=sum(up)" | "$PY" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)')
  [ "$up" -ge 3 ] && break
  sleep 1
done
[ "$up" -ge 3 ] || die "Prometheus does not scrape all 3 targets (see $PROM/api/v1/targets)"

say "driving $LOAD_SECS s of traffic with incidents"
"$PY" "$HELPER" load --sim "$SIM" --ingest "$INGEST" --wafleet $BIN/wafleet --rabbit-api http://127.0.0.1:15672 \
  --vhost "$NAME" --secrets "$TMP/bot-secrets.json" --bot-port "$BOT_PORT" --proxy-pid "$PROXY_PID" \
  --worker-pidfile "$TMP/worker.pid" \
  --duration "$LOAD_SECS" --events-out "$TMP/events.json"
sleep $((2 * SCRAPE)) # the last scrapes

say "rendering $OUT"
"$PY" "$HELPER" render --prometheus "$PROM" --dashboard deploy/grafana/wafleet-dashboard.json \
  --events "$TMP/events.json" --out "$OUT" --namespace wafleet --vhost "$NAME" --scrape-interval "$SCRAPE" \
  --tail $((2 * SCRAPE)) \
  --require "Ingest requests by status" --require "Processed by outcome" --require "Sends by outcome" \
  --require "Ready messages per tenant queue (top N)" --require "Worker replicas up" --require "Ingest replicas up"
say "done in $((SECONDS - begin)) s: $OUT"
