#!/usr/bin/env bash
# A primary and a synchronous streaming standby on loopback, for the failover tests
# (tests/tests/serial). It never touches the shared cluster on 5432: the pair lives in its own
# folder, on its own ports, with trust authentication on 127.0.0.1 only.
#
#   scripts/pg-standby.sh up                  # primary on $PRIMARY_PORT, standby (pg_basebackup) on $STANDBY_PORT
#   scripts/pg-standby.sh stop-primary MODE   # pg_ctl stop -m fast (switchover) or immediate (failover)
#   scripts/pg-standby.sh promote             # pg_ctl promote the standby, waits until it accepts writes
#   scripts/pg-standby.sh down                # stops both (immediate) and removes the folder
#
# Replication is synchronous (synchronous_standby_names = 'standby1', synchronous_commit = on): a
# commit returns only once the standby has flushed it, so a promoted standby holds every commit
# a worker acknowledged to the broker after. The promoted standby runs without a standby of its
# own (synchronous_standby_names = '') so writes do not block after the failover.
set -euo pipefail

DIR="${WAFLEET_PG_STANDBY_DIR:-/tmp/wafleet-pg-standby}"
PRIMARY_PORT="${WAFLEET_PG_PRIMARY_PORT:-55432}"
STANDBY_PORT="${WAFLEET_PG_STANDBY_PORT:-55433}"
BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
[ -x "$BIN/pg_basebackup" ] || { echo "pg_basebackup not found (install postgresql-15)" >&2; exit 1; }

# Postgres refuses to run as root: run its tools as the postgres user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_ctl_() { as_pg "$BIN/pg_ctl" "$@"; }

down() {
  for node in primary standby; do
    [ -f "$DIR/$node/postmaster.pid" ] && pg_ctl_ -D "$DIR/$node" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  done
  rm -rf "$DIR"
}

up() {
  down
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
  as_pg "$BIN/initdb" -D "$DIR/primary" -U postgres --auth=trust -E UTF8 >/dev/null
  cat >>"$DIR/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PRIMARY_PORT
unix_socket_directories = '$DIR'
wal_level = replica
max_wal_senders = 5
max_connections = 200
fsync = off
synchronous_standby_names = 'standby1'
synchronous_commit = on
EOF
  pg_ctl_ -D "$DIR/primary" -l "$DIR/primary.log" -w -t 60 start >/dev/null
  as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DIR/standby" -R -X stream \
    --checkpoint=fast
  cat >>"$DIR/standby/postgresql.auto.conf" <<EOF
port = $STANDBY_PORT
primary_conninfo = 'host=127.0.0.1 port=$PRIMARY_PORT user=postgres application_name=standby1'
synchronous_standby_names = ''
EOF
  pg_ctl_ -D "$DIR/standby" -l "$DIR/standby.log" -w -t 60 start >/dev/null
  for _ in $(seq 1 100); do
    state=$(as_pg psql -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -Atc \
      "select sync_state from pg_stat_replication where application_name = 'standby1'" 2>/dev/null || true)
    [ "$state" = sync ] && { echo "primary 127.0.0.1:$PRIMARY_PORT, synchronous standby 127.0.0.1:$STANDBY_PORT"; return 0; }
    sleep 0.1
  done
  echo "the standby never became synchronous" >&2
  exit 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  stop-primary) pg_ctl_ -D "$DIR/primary" -m "${2:-fast}" -w -t 60 stop >/dev/null ;;
  promote) pg_ctl_ -D "$DIR/standby" -w -t 60 promote >/dev/null ;;
  *) echo "usage: $0 up|down|stop-primary fast|immediate|promote" >&2; exit 2 ;;
esac
