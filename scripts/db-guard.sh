#!/usr/bin/env bash
# Database guard: fails (exit 1) if the schema could let one tenant see another's rows or a
# duty's role do more than its duty. It lists every table with a tenant_id column that lacks RLS +
# FORCE + a tenant-scoped policy; a duty role that is superuser, BYPASSRLS, CREATEROLE, a member
# of a privileged role or of a table owner, or able to CREATE in the schema; a worker role that
# inherits the administration role; every SECURITY DEFINER function without a fixed search_path
# (pg_temp last), that returns message content, that has no row in wafleet_function_grants, or
# that a role outside the duties of its row may execute. The checks are in scripts/db-guard.sql;
# the test `db_guard` runs the same query on every CI run against a freshly migrated database.
#
#   scripts/db-guard.sh [DB_URL] [ROLE]
#
# DB_URL defaults to MIGRATE_DATABASE_URL (any role that can read the catalog will do). Without
# ROLE, every role `wafleet migrate` recorded (the worker's and the administration role) is
# checked. Needs psql.
set -euo pipefail
cd "$(dirname "$0")/.."

db_url="${1:-${MIGRATE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/wafleet}}"
role="${2:-}"

# -c and -f run in order in one session, so the setting reaches the query.
out="$(psql "$db_url" -X -q -At -F ' | ' -v ON_ERROR_STOP=1 \
  -c "set wafleet.guard_role = '${role//\'/\'\'}'" \
  -f scripts/db-guard.sql)"
checked="${role:-the recorded duty roles}"
if [ -n "$out" ]; then
  echo "db-guard: holes for ${checked}:" >&2
  echo "violation | object | detail" >&2
  echo "$out" >&2
  exit 1
fi
echo "db-guard: ok (${checked})"
