#!/usr/bin/env bash
# Least-privilege RabbitMQ users, one per service, through the management HTTP API.
#
#   user             configure        write                      read     tags
#   wafleet_ingest   ^$               ^wa\.inbound$              ^$       (none)
#   wafleet_worker   ^wa\.            ^(wa\..*|amq\.default)$    ^wa\.    (none)
#   wafleet_cli      ^wa\.            ^(wa\..*|amq\.default)$    ^wa\.    policymaker
#
# * ingest only publishes to wa.inbound. Its start-up check of wa.inbound is a passive declare,
#   which needs no permission; it cannot read, declare, bind or reach a queue directly (the
#   default exchange is amq.default, which it may not write).
# * the worker and the CLI own the wa.* topology. They also write to the default exchange
#   (amq.default): the quarantine, the wa.unrouted requeue and DLQ replay publish by queue name.
# * only the CLI has a management tag: `wafleet migrate` applies policies, which needs
#   policymaker (it includes management). The worker's start-up policy check then only warns.
#
# Environment:
#   RABBITMQ_API_URL              admin URL, default http://guest:guest@127.0.0.1:15672
#   WAFLEET_RABBITMQ_VHOST        vhost, default: the path of AMQP_URL, else /
#   WAFLEET_INGEST_AMQP_PASSWORD  \
#   WAFLEET_WORKER_AMQP_PASSWORD   } required to create; never printed
#   WAFLEET_CLI_AMQP_PASSWORD     /
#   WAFLEET_RABBITMQ_USER_SUFFIX  appended to each user name (tests use the vhost name)
#
#   scripts/rabbitmq-users.sh            create or update the users and their permissions
#   scripts/rabbitmq-users.sh --delete   delete the users
#
# Tested by tests/tests/it/broker_users.rs. Needs curl and python3.
set -euo pipefail

mode="${1:-create}"
case "$mode" in
  create | --delete) ;;
  *) echo "usage: $0 [--delete]" >&2; exit 2 ;;
esac

api="${RABBITMQ_API_URL:-http://guest:guest@127.0.0.1:15672}"
suffix="${WAFLEET_RABBITMQ_USER_SUFFIX:-}"
vhost="${WAFLEET_RABBITMQ_VHOST:-}"
if [ -z "$vhost" ]; then
  vhost="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]).path.lstrip("/"); print(u.unquote(p) if p else "/")' "${AMQP_URL:-amqp://127.0.0.1:5672/%2f}")"
fi

# The admin credentials go to curl through a private config file, not the command line.
split="$(python3 -c 'import sys, urllib.parse as u
s = u.urlsplit(sys.argv[1])
print(s._replace(netloc=s.hostname + (":%d" % s.port if s.port else "")).geturl().rstrip("/"))
print(u.unquote(s.username or ""))
print(u.unquote(s.password or ""))' "$api")"
base="$(sed -n 1p <<<"$split")"
admin_user="$(sed -n 2p <<<"$split")"
admin_password="$(sed -n 3p <<<"$split")"
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
chmod 600 "$config"
printf 'user = "%s:%s"\n' "${admin_user//\"/\\\"}" "${admin_password//\"/\\\"}" >"$config"

enc() { python3 -c 'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=""))' "$1"; }

# call METHOD PATH [JSON on stdin]
call() {
  local method="$1" path="$2"
  if [ "$method" = DELETE ]; then
    curl -sS -K "$config" -o /dev/null -w '%{http_code}' -X DELETE "$base/api/$path"
  else
    curl -fsS -K "$config" -o /dev/null -X "$method" -H 'content-type: application/json' --data-binary @- "$base/api/$path"
  fi
}

# user NAME PASSWORD_VAR TAGS CONFIGURE WRITE READ
user() {
  local name="$1$suffix" password_var="$2" tags="$3" configure="$4" write="$5" read="$6"
  if [ "$mode" = --delete ]; then
    local code
    code="$(call DELETE "users/$(enc "$name")")"
    case "$code" in 204 | 404) echo "deleted $name" ;; *) echo "deleting $name: HTTP $code" >&2; return 1 ;; esac
    return 0
  fi
  if [ -z "${!password_var:-}" ]; then
    echo "$password_var is required (the password of $name)" >&2
    return 1
  fi
  NAME_PASSWORD="${!password_var}" TAGS="$tags" python3 -c 'import json, os
print(json.dumps({"password": os.environ["NAME_PASSWORD"], "tags": os.environ["TAGS"]}))' |
    call PUT "users/$(enc "$name")"
  CONFIGURE="$configure" WRITE="$write" READ="$read" python3 -c 'import json, os
print(json.dumps({"configure": os.environ["CONFIGURE"], "write": os.environ["WRITE"], "read": os.environ["READ"]}))' |
    call PUT "permissions/$(enc "$vhost")/$(enc "$name")"
  echo "created $name on vhost $vhost (tags: ${tags:-none})"
}

user wafleet_ingest WAFLEET_INGEST_AMQP_PASSWORD "" '^$' '^wa\.inbound$' '^$'
user wafleet_worker WAFLEET_WORKER_AMQP_PASSWORD "" '^wa\.' '^(wa\..*|amq\.default)$' '^wa\.'
user wafleet_cli WAFLEET_CLI_AMQP_PASSWORD policymaker '^wa\.' '^(wa\..*|amq\.default)$' '^wa\.'
