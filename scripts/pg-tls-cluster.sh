#!/usr/bin/env bash
# A throwaway PostgreSQL cluster that accepts only TLS (hostssl) connections, for the TLS test
# (tests/tests/it/pg_tls.rs) and for trying sslmode/sslrootcert by hand. It never touches the
# shared cluster on 5432: its own data directory, its own port, loopback only.
#
#   scripts/pg-tls-cluster.sh up DIR PORT   makes DIR/ca.crt (the CA that signed the server
#                                           certificate, CN/SAN 127.0.0.1 and localhost),
#                                           DIR/wrong-ca.crt (an unrelated CA), and starts the
#                                           cluster on 127.0.0.1:PORT (superuser postgres, trust
#                                           over hostssl only)
#   scripts/pg-tls-cluster.sh down DIR      stops it (immediate) and removes DIR
#
# Needs openssl and the PostgreSQL server binaries (pg_config --bindir, else the newest
# /usr/lib/postgresql/*/bin). Run as root (it drops to the postgres user) or as postgres.
set -euo pipefail

die() { printf 'pg-tls-cluster: %s\n' "$*" >&2; exit 1; }
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 up DIR PORT | down DIR"

bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || die "no initdb found (install the postgresql server package)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $cmd in
up)
  port=${3:-}; [ -n "$port" ] || die "usage: $0 up DIR PORT"
  command -v openssl >/dev/null || die "openssl is required"
  mkdir -p "$dir"
  cd "$dir"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  for ca in ca wrong-ca; do
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=wafleet test $ca" -keyout "$ca.key" -out "$ca.crt" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  done
  openssl req "${ec[@]}" -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext \
    -out server.crt 2>/dev/null
  chmod 600 server.key
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
  as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
    || die "initdb failed: $(tail -n 5 "$dir/initdb.log")"
  cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
fsync = off
max_connections = 30
shared_buffers = 16MB
CONF
  # TLS or nothing: no `host` line, so a plaintext connection finds no pg_hba entry.
  printf '%s\n' "local all all trust" "hostssl all all 127.0.0.1/32 trust" > "$dir/data/pg_hba.conf"
  as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null \
    || die "the cluster did not start: $(tail -n 5 "$dir/server.log")"
  ;;
down)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*) die "usage: $0 up DIR PORT | down DIR" ;;
esac
