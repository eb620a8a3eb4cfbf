#!/usr/bin/env bash
# Least-privilege RabbitMQ users, one per service, through the management HTTP API.
#
# The users, their tags and their vhost permissions are read from the Kubernetes manifest
# deploy/k8s/examples/rabbitmq-topology.yaml (its User and Permission objects), so local runs,
# the tests and production use the same rights; there is no second copy here. Today that gives:
#
#   user             configure    write            read       tags
#   wafleet-ingest   (none)       ^wa\.inbound$    (none)     (none)
#   wafleet-worker   ^wa\.        ^wa\.            ^wa\.      (none)
#   wafleet-cli      ^wa\.        ^wa\.            ^wa\.      policymaker
#   wafleet-keda     (no permissions on the vhost)            monitoring   (only if its password is set)
#
# Environment:
#   RABBITMQ_API_URL              admin URL, default http://guest:guest@127.0.0.1:15672
#   WAFLEET_RABBITMQ_VHOST        vhost, default: the path of AMQP_URL, else /
#   WAFLEET_<SERVICE>_AMQP_PASSWORD  the password of wafleet-<service> (INGEST, WORKER, CLI
#                                 required; KEDA optional); never printed
#   WAFLEET_RABBITMQ_USER_SUFFIX  appended to each user name (tests use the vhost name)
#   WAFLEET_RABBITMQ_MANIFEST     the manifest to read, default the one above
#
#   scripts/rabbitmq-users.sh            create or update the users and their permissions
#   scripts/rabbitmq-users.sh --delete   delete the users
#
# Tested by tests/tests/it/broker_users.rs. Needs curl, python3 and PyYAML.
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
  if [ "$configure" = "-" ]; then
    echo "created $name (tags: ${tags:-none}; no vhost permissions)"
    return 0
  fi
  CONFIGURE="$configure" WRITE="$write" READ="$read" python3 -c 'import json, os
print(json.dumps({"configure": os.environ["CONFIGURE"], "write": os.environ["WRITE"], "read": os.environ["READ"]}))' |
    call PUT "permissions/$(enc "$vhost")/$(enc "$name")"
  echo "created $name on vhost $vhost (tags: ${tags:-none})"
}

manifest="${WAFLEET_RABBITMQ_MANIFEST:-$(dirname "$0")/../deploy/k8s/examples/rabbitmq-topology.yaml}"
# One line per user: name, password variable, tags, configure, write, read (tab-separated).
users="$(python3 - "$manifest" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
perms = {d["spec"]["userReference"]["name"]: d["spec"]["permissions"] for d in docs if d.get("kind") == "Permission"}
for d in docs:
    if d.get("kind") != "User":
        continue
    name = d["metadata"]["name"]
    var = "WAFLEET_" + name.removeprefix("wafleet-").upper().replace("-", "_") + "_AMQP_PASSWORD"
    p = perms.get(name)
    row = [name, var, ",".join(d["spec"].get("tags") or [])]
    row += ["-"] * 3 if p is None else [p.get("configure", ""), p.get("write", ""), p.get("read", "")]
    print("\t".join(x if x != "" else "''" for x in row))
PY
)"
[ -n "$users" ] || { echo "no User objects in $manifest" >&2; exit 1; }

while IFS=$'\t' read -r name var tags configure write read; do
  unq() { [ "$1" = "''" ] && echo "" || echo "$1"; }
  tags="$(unq "$tags")"
  if [ "$configure" = "-" ] && [ "$mode" != --delete ] && [ -z "${!var:-}" ]; then
    continue # a user without vhost permissions (monitoring) is optional
  fi
  user "$name" "$var" "$tags" "$(unq "$configure")" "$(unq "$write")" "$(unq "$read")"
done <<<"$users"
