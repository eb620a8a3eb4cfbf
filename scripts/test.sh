#!/usr/bin/env bash
# The test command of the README: starts the local services if needed, removes leftovers of
# interrupted runs, then runs every test of the workspace.
#
# Outside CI, a machine without the local services may still run the tests: the harness then takes
# PostgreSQL and RabbitMQ from WAFLEET_TEST_PG_ADMIN_URL / WAFLEET_TEST_AMQP_BASE /
# RABBITMQ_API_URL, or starts them on a Docker engine, or fails at once saying what to start
# (test-services/). CI has no Docker engine and always uses the local services.
set -euo pipefail
cd "$(dirname "$0")/.."

local_services=1
if ! scripts/ensure-services.sh; then
  [ -z "${CI:-}" ] || exit 1
  local_services=0
  echo "[test] no local services: the tests take them from the environment or a Docker engine (docs/testing.md)" >&2
fi

# Databases and vhosts of tests that were killed before their cleanup ran (local services only;
# containers of the Docker path are new for each test binary).
if [ "$local_services" = 1 ]; then
  psql -h 127.0.0.1 -U postgres -d test -Atc "select datname from pg_database where datname like 'wf\_t\_%'" 2>/dev/null |
    while read -r db; do psql -h 127.0.0.1 -U postgres -d test -qc "drop database if exists \"$db\" with (force)" || true; done
  curl -fsS -u guest:guest http://127.0.0.1:15672/api/vhosts 2>/dev/null |
    python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin) if v["name"].startswith(("wf_t_","wafleet-ingest-test-"))]' 2>/dev/null |
    while read -r vhost; do curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/vhosts/$vhost" >/dev/null || true; done
  # Extra cluster nodes left by a killed cluster test.
  if [ -d /var/lib/rabbitmq/wafleet-cluster ]; then scripts/rabbitmq-cluster.sh down || true; fi
fi

# The serial test binary (tests/tests/serial) runs after the parallel suites, one test at a time.
# The suites run the binaries as processes (`wafleet` above all: the CLI crate has no integration
# test of its own, so `cargo test` alone would not build it, and a test would run an old one).
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"

# The RabbitMQ cluster group (tests/tests/serial/cluster.rs, `#[ignore]`d so that no other run
# picks it up): last, because it joins the system's broker into a three-node cluster, which no
# other test may share. About 4 minutes with the cluster's start and stop. Left out of a filtered
# run (arguments given), without the local services, or with WAFLEET_SKIP_CLUSTER_TESTS=1.
if [ "$local_services" = 1 ] && [ $# -eq 0 ] && [ -z "${WAFLEET_SKIP_CLUSTER_TESTS:-}" ]; then
  echo "[test] RabbitMQ cluster group: scripts/rabbitmq-cluster.sh up, the cluster tests, down" >&2
  trap 'scripts/rabbitmq-cluster.sh down' EXIT
  scripts/rabbitmq-cluster.sh up
  cargo test -p wafleet-tests --test serial --locked -- --ignored cluster::
  trap - EXIT
  scripts/rabbitmq-cluster.sh down
  # The single node must serve whatever runs next (CI's contract and benchmark steps): the same
  # check as at the start, which restarts a node that cannot create vhosts any more.
  scripts/ensure-services.sh
fi
