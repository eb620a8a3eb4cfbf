#!/usr/bin/env bash
# A local three-node RabbitMQ cluster on loopback, for the cluster tests: the installed broker
# (rabbit@localhost, AMQP 5672, management 15672) plus two more nodes of the same installation
# joined to it.
#
#   scripts/rabbitmq-cluster.sh up           start rabbit2 and rabbit3 and join them (idempotent)
#   scripts/rabbitmq-cluster.sh down         take them out again, leaving the single node as before
#   scripts/rabbitmq-cluster.sh status       print the cluster's running nodes
#   scripts/rabbitmq-cluster.sh stop NODE    stop a node gracefully (rabbit: its app only)
#   scripts/rabbitmq-cluster.sh kill NODE    SIGKILL an extra node (rabbit2, rabbit3): a lost node
#   scripts/rabbitmq-cluster.sh start NODE   start a stopped or killed node again and wait for it
#
# node       AMQP   management  prometheus  distribution
# rabbit     5672   15672       15692       25672   (the system's node, never reset here)
# rabbit2    5673   15673       15693       25673
# rabbit3    5674   15674       15694       25674
#
# `down` first gives every quorum queue a member on rabbit@localhost (`rabbitmq-queues grow`),
# then removes the extra nodes' members (`rabbitmq-queues shrink`), checks through the
# management API that no quorum queue has a member elsewhere, and only then resets and stops
# the extra nodes, so no queue is left without its majority. Their data lives under
# /var/lib/rabbitmq/wafleet-cluster/ and is deleted by `down`.
#
# The primary's VM belongs to the system service (its environment is
# /etc/rabbitmq/rabbitmq-env.conf), so `stop rabbit` stops only its RabbitMQ application and
# `start rabbit` starts it again in the same VM; the extra nodes get a per-node environment file,
# so the primary's NODENAME never leaks into them.
set -euo pipefail

log() { printf '[rabbitmq-cluster] %s\n' "$*" >&2; }
die() { printf '[rabbitmq-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

BASE=/var/lib/rabbitmq/wafleet-cluster
PRIMARY=rabbit@localhost
NODES=(rabbit2 rabbit3)
# The Debian wrapper in /usr/sbin would send the node's output to the primary's startup_log.
SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
[ -x "$SERVER" ] || SERVER=rabbitmq-server

port_for() { # node kind
  local n=${1#rabbit}
  n=${n:-1}
  case $2 in
    amqp) echo $((5671 + n)) ;;
    mgmt) echo $((15671 + n)) ;;
    prom) echo $((15691 + n)) ;;
    dist) echo $((25671 + n)) ;;
  esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

as_rabbitmq() { # runs a command as the rabbitmq user with the node's environment
  local node=$1; shift
  env -i PATH="$PATH" HOME=/var/lib/rabbitmq LANG=C.UTF-8 \
    RABBITMQ_CONF_ENV_FILE="$BASE/$node/rabbitmq-env.conf" \
    RABBITMQ_NODENAME="$node@localhost" \
    RABBITMQ_CONFIG_FILE="$BASE/$node/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$BASE/$node/mnesia" \
    RABBITMQ_LOG_BASE="$BASE/$node/log" \
    RABBITMQ_DIST_PORT="$(port_for "$node" dist)" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/$node/enabled_plugins" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    runuser -u rabbitmq -- "$@"
}

ctl() { local node=$1; shift; rabbitmqctl -n "$node@localhost" "$@"; }

node_running() { ctl "$1" -q await_startup --timeout 1 >/dev/null 2>&1; }
node_registered() { ctl "$1" -q ping >/dev/null 2>&1; }

write_config() {
  local node=$1
  mkdir -p "$BASE/$node/mnesia" "$BASE/$node/log"
  cat >"$BASE/$node/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(port_for "$node" amqp)
management.tcp.ip = 127.0.0.1
management.tcp.port = $(port_for "$node" mgmt)
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = $(port_for "$node" prom)
EOF
  : >"$BASE/$node/rabbitmq-env.conf"
  cp /etc/rabbitmq/enabled_plugins "$BASE/$node/enabled_plugins" 2>/dev/null ||
    echo '[rabbitmq_management,rabbitmq_prometheus].' >"$BASE/$node/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$BASE"
}

# Starts an extra node's VM and waits until RabbitMQ runs on it. `-detached` returns before the
# node registers with epmd, and `await_startup` fails at once for an unregistered node, hence
# the ping loop first.
start_vm() {
  local node=$1
  [ -f "$BASE/$node/rabbitmq.conf" ] || write_config "$node"
  log "starting $node@localhost (AMQP $(port_for "$node" amqp))"
  as_rabbitmq "$node" "$SERVER" -detached
  wait_for 180 node_registered "$node" || die "$node@localhost did not start; see $BASE/$node/log"
  ctl "$node" -q await_startup --timeout 180 || die "$node@localhost did not boot; see $BASE/$node/log"
}

amqp_ready() { port_open "$(port_for "$1" amqp)"; }
api_ready() { curl -fsS -u guest:guest "http://127.0.0.1:$(port_for "$1" mgmt)/api/overview" >/dev/null 2>&1; }

member_of_cluster() {
  ctl "${PRIMARY%@*}" -q cluster_status --formatter json 2>/dev/null |
    python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if sys.argv[1] in s.get("running_nodes",[]) else 1)' "$1@localhost"
}

up() {
  command -v rabbitmqctl >/dev/null || die "rabbitmqctl is missing: install rabbitmq-server"
  command -v curl >/dev/null || die "curl is missing"
  node_running "${PRIMARY%@*}" || die "$PRIMARY is not running (scripts/ensure-services.sh starts it)"
  for node in "${NODES[@]}"; do
    if member_of_cluster "$node"; then
      log "$node@localhost is already a running member"
      continue
    fi
    if [ -d "$BASE/$node/mnesia/$node@localhost" ] && ! node_registered "$node"; then
      # Left stopped by a test or a crash: it is still a member, so it only needs starting.
      start_vm "$node"
      member_of_cluster "$node" && continue
    fi
    node_registered "$node" || { write_config "$node"; start_vm "$node"; }
    log "joining $node@localhost to $PRIMARY"
    ctl "$node" -q stop_app
    ctl "$node" -q reset
    # The CLI logs harmless errors about tables of nodes that are not up yet.
    ctl "$node" -q join_cluster "$PRIMARY" 2>"$BASE/$node/join.log" || { cat "$BASE/$node/join.log" >&2; die "join failed"; }
    ctl "$node" -q start_app
    ctl "$node" -q await_startup --timeout 180
  done
  for node in "${NODES[@]}"; do
    wait_for 120 amqp_ready "$node" || die "$node@localhost does not listen on $(port_for "$node" amqp)"
    wait_for 120 api_ready "$node" || die "$node@localhost's management API does not answer"
  done
  status
}

# Quorum queues (vhost<TAB>name<TAB>members) that are not on the primary alone: they have a
# member elsewhere, or none on the primary. Read from the queue records through rabbitmqctl:
# the management API's member lists come from periodic statistics and can be seconds old.
off_primary_queues() {
  local vhost
  rabbitmqctl -n "$PRIMARY" -q list_vhosts name --formatter json |
    python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]' |
    while read -r vhost; do
      rabbitmqctl -n "$PRIMARY" -q list_queues -p "$vhost" name type members --formatter json 2>/dev/null |
        python3 -c '
import json, sys
for q in json.load(sys.stdin):
    if q.get("type") == "quorum" and (q.get("members") or []) != ["rabbit@localhost"]:
        print(sys.argv[1], q["name"], ",".join(q.get("members") or []), sep="\t")
' "$vhost" || true
    done
}

# Moves every quorum queue onto the primary alone: a member there first (a queue declared
# through an extra node with a group size below three may have none), then the extra nodes'
# members removed one node at a time, while the other nodes still run, so each queue keeps its
# majority through every change. Repeated because the other suites keep declaring queues while
# this runs (a queue declared meanwhile gets members on every node).
shrink_to_primary() {
  local left=""
  for _ in 1 2 3 4 5; do
    rabbitmq-queues -n "$PRIMARY" -q grow "$PRIMARY" all >/dev/null 2>&1 || true
    for node in "${NODES[@]}"; do
      rabbitmq-queues -n "$PRIMARY" -q shrink "$node@localhost" >/dev/null 2>&1 || true
    done
    left=$(off_primary_queues)
    [ -n "$left" ] || return 0
    log "quorum queues not yet on $PRIMARY alone:"
    printf '%s\n' "$left" >&2
  done
  return 1
}

down() {
  # Members can only be moved while a majority of each queue runs: start what a test or a
  # crash left stopped first.
  node_running "${PRIMARY%@*}" || start_node rabbit
  for node in "${NODES[@]}"; do
    if [ -d "$BASE/$node/mnesia/$node@localhost" ] && ! node_running "$node"; then
      start_node "$node"
    fi
  done
  if [ -d "$BASE" ] || member_of_cluster rabbit2 || member_of_cluster rabbit3; then
    log "moving every quorum queue onto $PRIMARY alone"
    shrink_to_primary || die "some quorum queues still have members off $PRIMARY; no node was stopped"
  fi
  for node in "${NODES[@]}"; do
    if node_registered "$node"; then
      log "stopping $node@localhost"
      ctl "$node" -q stop_app || true
      ctl "$node" -q reset || true
      ctl "$node" -q stop || true
    fi
    # A node that died without leaving is forgotten by the primary.
    if ctl "${PRIMARY%@*}" -q cluster_status --formatter json 2>/dev/null | grep -q "\"$node@localhost\""; then
      ctl "${PRIMARY%@*}" -q forget_cluster_node "$node@localhost" || true
    fi
  done
  rm -rf "$BASE"
  status
}

status() {
  ctl "${PRIMARY%@*}" -q cluster_status --formatter json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print("running nodes:", " ".join(sorted(s.get("running_nodes",[])))); print("disk nodes:", " ".join(sorted(s.get("disk_nodes",[]))))'
}

check_node() {
  case "${1:-}" in
    rabbit | rabbit2 | rabbit3) ;;
    *) die "NODE must be rabbit, rabbit2 or rabbit3" ;;
  esac
}

stop_node() {
  check_node "$1"
  if [ "$1" = rabbit ]; then
    log "stopping the RabbitMQ application of $PRIMARY"
    ctl rabbit -q stop_app
  else
    log "stopping $1@localhost"
    ctl "$1" -q stop
  fi
}

kill_node() {
  check_node "$1"
  [ "$1" != rabbit ] || die "the system's node is never killed; use stop rabbit"
  local pid
  pid=$(ctl "$1" -q status --formatter json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])') ||
    die "$1@localhost does not answer"
  log "killing $1@localhost (pid $pid)"
  kill -KILL "$pid"
  wait_for 30 sh -c "! kill -0 $pid 2>/dev/null" || die "$1@localhost (pid $pid) did not die"
}

start_node() {
  check_node "$1"
  if [ "$1" = rabbit ]; then
    log "starting the RabbitMQ application of $PRIMARY"
    ctl rabbit -q start_app
    ctl rabbit -q await_startup --timeout 180
  else
    node_registered "$1" || start_vm "$1"
    ctl "$1" -q await_startup --timeout 180
  fi
  wait_for 120 amqp_ready "$1" || die "$1@localhost does not listen on $(port_for "$1" amqp)"
  wait_for 120 api_ready "$1" || die "$1@localhost's management API does not answer"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  stop) stop_node "${2:-}" ;;
  kill) kill_node "${2:-}" ;;
  start) start_node "${2:-}" ;;
  *) die "usage: $0 up|down|status|stop NODE|kill NODE|start NODE" ;;
esac
