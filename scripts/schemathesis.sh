#!/usr/bin/env bash
# Contract test of the admin API: property-based requests generated from the served
# OpenAPI document by Schemathesis, checking that no answer is a server error and that every answer
# conforms to its documented schema.
#
# It installs Schemathesis into a venv if missing ($WAFLEET_SCHEMATHESIS_VENV, default
# ~/.cache/wafleet-schemathesis), creates a scratch database and vhost (like the tests do), runs
# `wafleet migrate`, starts a WA Bridges simulator and `wafleet-admin` on free loopback ports,
# creates an admin token with the CLI, seeds the tenant named in the document's examples, runs
# `schemathesis run` (its stateful phase follows the document's links: create a tenant → rotate
# its URL → read it → offboard), then stops both servers and removes the database and vhost. Exits non-zero
# on any failure. Takes 2-4 minutes after the build.
#
# Knobs: SCHEMATHESIS_MAX_EXAMPLES (default 40 per operation), SCHEMATHESIS_SEED (default 9),
# WAFLEET_TEST_PG_ADMIN_URL, WAFLEET_TEST_AMQP_BASE, RABBITMQ_API_URL (same as scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[schemathesis] %s\n' "$*" >&2; }

VENV=${WAFLEET_SCHEMATHESIS_VENV:-$HOME/.cache/wafleet-schemathesis}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-40}
SEED=${SCHEMATHESIS_SEED:-9}
PG_ADMIN_URL=${WAFLEET_TEST_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
AMQP_BASE=${WAFLEET_TEST_AMQP_BASE:-amqp://guest:guest@127.0.0.1:5672}
RABBIT_API=${RABBITMQ_API_URL:-http://guest:guest@127.0.0.1:15672}

if [ ! -x "$VENV/bin/schemathesis" ]; then
  log "installing Schemathesis 4 into $VENV"
  # Debian's python3 needs python3-venv for this; install it when missing (CI runs as root).
  python3 -m venv "$VENV" 2>/dev/null || {
    rm -rf "$VENV"
    apt-get install -y -qq python3-venv >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv; }
    python3 -m venv "$VENV"
  }
  "$VENV/bin/pip" install --quiet 'schemathesis>=4.0,<5'
fi
log "$("$VENV/bin/schemathesis" --version)"

scripts/ensure-services.sh
log "building wafleet, wafleet-admin and wafleet-sim"
cargo build --locked --quiet -p wafleet-cli -p wafleet-admin -p wafleet-sim --bins
BIN=target/debug

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
with_db() { python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$1" "$2"; }
as_role() { python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); h=p.hostname+(":"+str(p.port) if p.port else ""); print(u.urlunsplit(p._replace(netloc=sys.argv[2]+"@"+h)))' "$1" "$2"; }
api_base() { python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(netloc=p.hostname+":"+str(p.port or 80))))' "$1"; }
api_user() { python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print((p.username or "guest")+":"+(p.password or "guest"))' "$1"; }

NAME="wf_st_$(python3 -c 'import secrets; print(secrets.token_hex(6))')"
OWNER_URL=$(with_db "$PG_ADMIN_URL" "$NAME")
export MIGRATE_DATABASE_URL=$OWNER_URL
export DATABASE_URL=$(as_role "$OWNER_URL" wafleet_worker)
export ADMIN_DATABASE_URL=$(as_role "$OWNER_URL" wafleet_admin)
export AMQP_URL="$AMQP_BASE/$NAME"
export RABBITMQ_API_URL=$RABBIT_API
export WAFLEET_SIGNING_KEY="schemathesis:$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
export WA_API_KEY=sk_schemathesis
export WAFLEET_OPERATOR=schemathesis
# The simulator is unlimited; keep the fleet's own budget out of the way too.
export WAFLEET_SEND_RATE_PER_MIN=100000 WAFLEET_SEND_BURST=100000
export WAFLEET_EGRESS_RATE_PER_MIN=100000 WAFLEET_EGRESS_BURST=100000
unset WAFLEET_ALLOW_UNSAFE_DB_ROLE

SIM_PID="" ADMIN_PID=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -n "$ADMIN_PID" ] && kill "$ADMIN_PID" 2>/dev/null && wait "$ADMIN_PID" 2>/dev/null
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  psql "$PG_ADMIN_URL" -qc "drop database if exists \"$NAME\" with (force)" >/dev/null 2>&1 || true
  curl -fsS -u "$(api_user "$RABBIT_API")" -X DELETE "$(api_base "$RABBIT_API")/api/vhosts/$NAME" >/dev/null 2>&1 || true
  [ "$status" -eq 0 ] && log "passed" || log "FAILED (exit $status); server log: $WORK/admin.log"
  exit "$status"
}
WORK=$(mktemp -d)
trap cleanup EXIT INT TERM

wait_http() { # url seconds
  for _ in $(seq $(($2 * 10))); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  log "no answer from $1 within $2 s"; return 1
}

log "scratch database and vhost $NAME"
psql "$PG_ADMIN_URL" -qc "create database \"$NAME\"" >/dev/null
curl -fsS -u "$(api_user "$RABBIT_API")" -X PUT "$(api_base "$RABBIT_API")/api/vhosts/$NAME" >/dev/null
curl -fsS -u "$(api_user "$RABBIT_API")" -X PUT -H 'content-type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' \
  "$(api_base "$RABBIT_API")/api/permissions/$NAME/$(api_user "$RABBIT_API" | cut -d: -f1)" >/dev/null
"$BIN/wafleet" migrate >/dev/null

SIM_PORT=$(free_port)
"$BIN/wafleet-sim" --addr "127.0.0.1:$SIM_PORT" --api-key "$WA_API_KEY" --unlimited >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
export WA_API_BASE_URL="http://127.0.0.1:$SIM_PORT"
wait_http "$WA_API_BASE_URL/_sim/stats" 30

# The document's examples name cust_8842: give it a tenant and a bridge so the examples phase
# exercises the success paths, not only 404s.
"$BIN/wafleet" tenants add cust_8842 --bridge cust_8842 >/dev/null
curl -fsS -H 'content-type: application/json' -d '{"customer_ref":"cust_8842"}' "$WA_API_BASE_URL/_sim/bridges" >/dev/null
TOKEN=$("$BIN/wafleet" admin-tokens create schemathesis --scopes read,credentials,pii,write,admin 2>/dev/null | tail -n 1)

ADMIN_PORT=$(free_port)
# The ops port on a free port too, so parallel runs never collide on 9082.
WAFLEET_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" WAFLEET_ADMIN_OPS_ADDR=127.0.0.1:0 \
  WAFLEET_ADMIN_RATE_PER_SEC=10000 WAFLEET_ADMIN_RATE_BURST=10000 \
  WAFLEET_ADMIN_ADDR_RATE_PER_SEC=10000 WAFLEET_ADMIN_ADDR_RATE_BURST=10000 \
  "$BIN/wafleet-admin" >"$WORK/admin.log" 2>&1 &
ADMIN_PID=$!
wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" 60

log "schemathesis run: $MAX_EXAMPLES examples per operation, seed $SEED"
# The token belongs to this scratch database only, which is dropped on exit. Revocation is left
# out: the stateful phase follows GET /v1/admin-tokens to revoke the names it lists, the run's own
# token among them, and every later request would be 401 (the router tests cover revocation). One worker: with
# several, Hypothesis parses lambda sources concurrently, which CPython 3.11's ast module does not
# survive ("AST constructor recursion depth mismatch").
"$VENV/bin/schemathesis" run "http://127.0.0.1:$ADMIN_PORT/openapi.json" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 30 \
  --header "Authorization: Bearer $TOKEN" \
  --exclude-path '/v1/admin-tokens/{name}/revoke' \
  --output-sanitize true
