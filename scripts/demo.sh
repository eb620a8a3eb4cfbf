#!/usr/bin/env bash
# Command one of the README: bring the whole stack up on this machine, seed two demo tenants on
# simulated bridges, fire messages at both, and show that each reply arrived only on its own
# bridge. Exits non-zero if a reply is missing or landed on the wrong bridge.
set -euo pipefail
cd "$(dirname "$0")/.."

INGEST_PORT=${WAFLEET_DEMO_INGEST_PORT:-18080}
INGEST_OPS_PORT=${WAFLEET_DEMO_INGEST_OPS_PORT:-19080}
WORKER_PORT=${WAFLEET_DEMO_WORKER_PORT:-18081}
SIM_PORT=${WAFLEET_DEMO_SIM_PORT:-18090}
DEMO=demo
STATE=.demo
PIDFILE=$STATE/pids
API_KEY=sk_demo_local

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

mkdir -p "$STATE"
cleanup() {
  if [ -f "$PIDFILE" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$PIDFILE"
    rm -f "$PIDFILE"
  fi
}
trap cleanup EXIT INT TERM
cleanup

say "wafleet demo. The first build compiles every dependency and takes several minutes on 2 cores."
for port in "$INGEST_PORT" "$INGEST_OPS_PORT" "$WORKER_PORT" "$SIM_PORT"; do
  port_open "$port" && die "port $port is in use; free it or set WAFLEET_DEMO_{INGEST,INGEST_OPS,WORKER,SIM}_PORT"
done

say "services"
if docker info >/dev/null 2>&1; then
  say "Docker engine found: starting RabbitMQ and Postgres from deploy/compose.yaml"
  # Compose checks the whole file's required variables first; the key itself is made below and
  # neither of these two services reads it.
  WAFLEET_SIGNING_KEY=${WAFLEET_SIGNING_KEY:-unused-by-rabbitmq-and-postgres} \
    docker compose -f deploy/compose.yaml up -d --wait rabbitmq postgres
else
  say "no Docker engine: using the local PostgreSQL and RabbitMQ packages"
  scripts/ensure-services.sh
fi

say "building (same profile as the tests, so nothing builds twice)"
cargo build --workspace --bins --locked
BIN=target/debug

say "recreating database and vhost '$DEMO'"
psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists $DEMO with (force)" -c "create database $DEMO"
curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/vhosts/$DEMO" >/dev/null 2>&1 || true
curl -fsS -u guest:guest -X PUT "http://127.0.0.1:15672/api/vhosts/$DEMO" >/dev/null
curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "http://127.0.0.1:15672/api/permissions/$DEMO/guest" >/dev/null

# The signing key persists across runs (gitignored) so URLs printed earlier stay valid.
if [ ! -s "$STATE/signing.key" ]; then
  printf 'demo:%s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')" >"$STATE/signing.key"
  chmod 600 "$STATE/signing.key"
fi
export WAFLEET_SIGNING_KEY; WAFLEET_SIGNING_KEY=$(cat "$STATE/signing.key")
export DATABASE_URL=postgres://wafleet_worker@127.0.0.1:5432/$DEMO
export ADMIN_DATABASE_URL=postgres://wafleet_admin@127.0.0.1:5432/$DEMO
export MIGRATE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DEMO
export AMQP_URL=amqp://guest:guest@127.0.0.1:5672/$DEMO
export RABBITMQ_API_URL=http://guest:guest@127.0.0.1:15672
export WA_API_KEY=$API_KEY
export WA_API_BASE_URL=http://127.0.0.1:$SIM_PORT
export WAFLEET_INGEST_ADDR=127.0.0.1:$INGEST_PORT
export WAFLEET_INGEST_OPS_ADDR=127.0.0.1:$INGEST_OPS_PORT
export WAFLEET_WORKER_ADDR=127.0.0.1:$WORKER_PORT
export WAFLEET_SIM_ADDR=127.0.0.1:$SIM_PORT
export WAFLEET_SPOOL_DIR=$STATE/spool
export RUST_LOG=${RUST_LOG:-warn}

say "migrating"
$BIN/wafleet migrate

say "starting the WA Bridges simulator, ingest and worker (logs in $STATE/*.log)"
$BIN/wafleet-sim --api-key "$API_KEY" --unlimited >"$STATE/sim.log" 2>&1 & echo $! >>"$PIDFILE"
$BIN/wafleet-ingest >"$STATE/ingest.log" 2>&1 & echo $! >>"$PIDFILE"
$BIN/wafleet-worker >"$STATE/worker.log" 2>&1 & echo $! >>"$PIDFILE"

wait_http() {
  for _ in $(seq 120); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "$2 did not become ready at $1 (see $STATE/*.log)"
}
wait_http "http://127.0.0.1:$SIM_PORT/_sim/bridges" simulator
wait_http "http://127.0.0.1:$INGEST_OPS_PORT/readyz" ingest

SIM=http://127.0.0.1:$SIM_PORT/_sim
say "seeding two tenants on simulated bridges"
$BIN/wafleet tenants add demo_bakery --bridge demo_bakery --bot rules
$BIN/wafleet tenants add demo_garage --bridge demo_garage --bot echo
$BIN/wafleet rules add demo_bakery hours "We bake from 7 to 15, Monday to Saturday."
$BIN/wafleet rules add demo_bakery sourdough "Sourdough comes out of the oven at 8."
for tenant in demo_bakery demo_garage; do
  url=$($BIN/wafleet webhook-url "$tenant" --base "http://127.0.0.1:$INGEST_PORT" | tail -n 1)
  echo "  $tenant -> ${url%/*}/<token>"
  curl -fsS -H 'content-type: application/json' -d "{\"customer_ref\":\"$tenant\",\"webhook_url\":\"$url\",\"api_key\":\"$API_KEY\"}" \
    "$SIM/bridges" >/dev/null
done
wait_http "http://127.0.0.1:$WORKER_PORT/readyz" worker

say "firing messages at both bridges"
fire() {
  curl -fsS -H 'content-type: application/json' -d "{\"chat\":\"$2\",\"body\":\"$3\"}" "$SIM/bridges/$1/fire-message" >/dev/null
}
fire demo_bakery 447700900101 "What are your opening hours?"
fire demo_garage 447700900202 "My car makes a strange noise"
fire demo_bakery 447700900102 "Is the sourdough ready?"
fire demo_garage 447700900203 "Can I book a service on Friday?"

say "waiting for replies"
python3 - "$SIM" <<'PY'
import json, sys, time, urllib.request
sim = sys.argv[1]
expected = {
    "demo_bakery": {"447700900101": "We bake from 7 to 15, Monday to Saturday.",
                    "447700900102": "Sourdough comes out of the oven at 8."},
    "demo_garage": {"447700900202": "My car makes a strange noise",
                    "447700900203": "Can I book a service on Friday?"},
}
def sends(bridge):
    with urllib.request.urlopen(f"{sim}/bridges/{bridge}/sends") as r:
        return json.load(r)
deadline = time.time() + 60
while time.time() < deadline:
    got = {b: sends(b) for b in expected}
    if all(len(got[b]) >= len(expected[b]) for b in expected):
        break
    time.sleep(0.5)
print(f"\n{'BRIDGE':<14} {'CHAT':<14} REPLY")
ok = True
for bridge, replies in got.items():
    for s in replies:
        print(f"{bridge:<14} {s['chat']:<14} {s['body']}")
        if expected[bridge].get(s["chat"]) != s["body"]:
            print(f"  !! unexpected reply on {bridge}", file=sys.stderr); ok = False
    missing = set(expected[bridge]) - {s["chat"] for s in replies}
    for chat in missing:
        print(f"  !! no reply on {bridge} for chat {chat}", file=sys.stderr); ok = False
print()
if not ok:
    sys.exit("demo FAILED: a reply is missing or arrived on the wrong bridge")
print("demo OK: every reply arrived, each on its own tenant's bridge.")
PY
