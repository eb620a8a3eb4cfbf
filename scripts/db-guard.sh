#!/usr/bin/env bash
# Database guard: fails (exit 1) if the schema could let one tenant see another's rows. It lists
# every table with a tenant_id column that lacks RLS + FORCE + a tenant-scoped policy, an
# application role that is superuser, BYPASSRLS, CREATEROLE, a member of a table owner or able to
# CREATE in the schema, and every SECURITY DEFINER function without a fixed search_path (pg_temp
# last) or that returns message content. The checks are in scripts/db-guard.sql; the test
# `db_guard` runs the same query on every CI run against a freshly migrated database.
#
#   scripts/db-guard.sh [DB_URL] [APP_ROLE]
#
# DB_URL defaults to MIGRATE_DATABASE_URL (any role that can read the catalog will do), APP_ROLE
# to the user of DATABASE_URL, else wafleet_app. Needs psql.
set -euo pipefail
cd "$(dirname "$0")/.."

db_url="${1:-${MIGRATE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/wafleet}}"
app_role="${2:-}"
if [ -z "$app_role" ] && [ -n "${DATABASE_URL:-}" ]; then
  app_role="$(python3 -c 'import sys, urllib.parse as u; print(u.unquote(u.urlsplit(sys.argv[1]).username or ""))' "$DATABASE_URL")"
fi
app_role="${app_role:-wafleet_app}"

# -c and -f run in order in one session, so the setting reaches the query.
out="$(psql "$db_url" -X -q -At -F ' | ' -v ON_ERROR_STOP=1 \
  -c "set wafleet.guard_role = '${app_role//\'/\'\'}'" \
  -f scripts/db-guard.sql)"
if [ -n "$out" ]; then
  echo "db-guard: isolation holes for application role ${app_role}:" >&2
  echo "violation | object | detail" >&2
  echo "$out" >&2
  exit 1
fi
echo "db-guard: ok (application role ${app_role})"
