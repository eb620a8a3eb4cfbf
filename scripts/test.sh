#!/usr/bin/env bash
# The test command of the README: starts the local services if needed, removes leftovers of
# interrupted runs, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-services.sh

# Databases and vhosts of tests that were killed before their cleanup ran.
psql -h 127.0.0.1 -U postgres -d test -Atc "select datname from pg_database where datname like 'wf\_t\_%'" 2>/dev/null |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d test -qc "drop database if exists \"$db\" with (force)" || true; done
curl -fsS -u guest:guest http://127.0.0.1:15672/api/vhosts 2>/dev/null |
  python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin) if v["name"].startswith(("wf_t_","wafleet-ingest-test-"))]' 2>/dev/null |
  while read -r vhost; do curl -fsS -u guest:guest -X DELETE "http://127.0.0.1:15672/api/vhosts/$vhost" >/dev/null || true; done

cargo test --workspace --locked "$@"
