#!/usr/bin/env bash
# Private PostgreSQL cluster for local development and tests.
#   pg.sh start   initdb on first use, start the server, create database "ptce" if absent
#   pg.sh stop    fast shutdown if running
#   pg.sh status  exit 0 if running
#   pg.sh url     print the connection URL of database "ptce"
# Data, log and unix socket live under $PTCE_STATE_DIR/pg; TCP on 127.0.0.1 only.
# PostgreSQL refuses to run as root: when run as root, the server runs as the "postgres" user.
# Environment:
#   PTCE_STATE_DIR           state folder (default: <repo>/.state)
#   PTCE_PG_PORT             TCP port (default: 15432)
#   PTCE_PG_ADMIN_PASSWORD   password of superuser ptce_admin (default: ptce_admin; used at initdb)
#   PTCE_PG_BIN              PostgreSQL binaries (default: /usr/lib/postgresql/15/bin)
#   PTCE_PG_STATEMENTS       when 1, pg_stat_statements is loaded (make bench's statement figures)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE_DIR=$(realpath -m "${PTCE_STATE_DIR:-$ROOT/.state}")
PG_DIR=$STATE_DIR/pg
DATA=$PG_DIR/data
SOCK_DIR=$PG_DIR/run
LOG=$PG_DIR/postgresql.log
PORT=${PTCE_PG_PORT:-15432}
PASSWORD=${PTCE_PG_ADMIN_PASSWORD:-ptce_admin}
BIN=${PTCE_PG_BIN:-/usr/lib/postgresql/15/bin}
cd /   # the server user may not be able to enter the caller's folder

die() { echo "pg: $*" >&2; exit 1; }

# Run a server-side command as the owner of the cluster.
as_pg() {
  if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { [[ -f $DATA/PG_VERSION ]] && as_pg "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

psql_admin() {
  PGPASSWORD=$PASSWORD "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" \
    -U ptce_admin -d postgres -tA "$@"
}

urlencode() {
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [a-zA-Z0-9.~_-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

# A normal user can only manage a cluster it owns (one created as root belongs to postgres).
check_owner() {
  if ((EUID != 0)) && [[ -e $PG_DIR && ! -O $PG_DIR ]]; then
    die "$PG_DIR belongs to $(stat -c %U "$PG_DIR"): run as root, or use another PTCE_STATE_DIR"
  fi
}

prepare_dirs() {
  mkdir -p "$SOCK_DIR"
  if ((EUID == 0)); then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' system user (apt-get install postgresql)"
    [[ $(stat -c %U "$PG_DIR") == postgres ]] || chown -R postgres: "$PG_DIR"
    if ! runuser -u postgres -- test -w "$PG_DIR"; then
      namei -m "$PG_DIR" >&2 || true
      die "user 'postgres' cannot reach $PG_DIR: every parent folder needs o+x (e.g. chmod o+x <folder>), or set PTCE_STATE_DIR elsewhere"
    fi
  fi
  # A unix socket path is limited to 107 bytes.
  ((${#SOCK_DIR} + 20 <= 107)) || die "socket folder path too long ($SOCK_DIR); use a shorter PTCE_STATE_DIR"
}

init_cluster() {
  [[ -z $(ls -A "$DATA" 2>/dev/null) ]] || die "$DATA is not empty but holds no cluster"
  local locale=C pwfile=$PG_DIR/.pwfile out
  locale -a 2>/dev/null | grep -qix 'c.utf-\?8' && locale=C.UTF-8
  trap 'rm -f "$PG_DIR/.pwfile"' EXIT
  (umask 077 && printf '%s\n' "$PASSWORD" >"$pwfile")
  ((EUID != 0)) || chown postgres: "$pwfile"
  if ! out=$(as_pg "$BIN/initdb" -D "$DATA" -U ptce_admin --pwfile="$pwfile" \
    --auth=scram-sha-256 -E UTF8 --locale="$locale" 2>&1); then
    printf '%s\n' "$out" >&2
    die "initdb failed"
  fi
  echo "include_if_exists = 'ptce.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
  echo "pg: initialised cluster in $DATA"
}

# Settings rewritten on every start, so a changed PTCE_PG_PORT or state path applies.
write_conf() {
  as_pg tee "$DATA/ptce.conf" >/dev/null <<CONF
# Written by deploy/local/pg.sh on every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK_DIR'
shared_buffers = 256MB
max_connections = 200
fsync = on
synchronous_commit = on
CONF
  if [[ ${PTCE_PG_STATEMENTS:-} == 1 ]]; then
    printf "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n" |
      as_pg tee -a "$DATA/ptce.conf" >/dev/null
  fi
}

start() {
  if running; then echo "pg: already running on port $(sed -n 4p "$DATA/postmaster.pid")"; return; fi
  prepare_dirs
  [[ -f $DATA/PG_VERSION ]] || init_cluster
  write_conf
  if ! as_pg "$BIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 >/dev/null; then
    tail -n 20 "$LOG" >&2 || true
    die "server did not start (log: $LOG)"
  fi
  if [[ -z $(psql_admin -c "select 1 from pg_database where datname = 'ptce'") ]]; then
    psql_admin -c 'create database ptce'
    echo "pg: created database ptce"
  fi
  echo "pg: running on 127.0.0.1:$PORT (data: $DATA)"
}

stop() {
  if ! running; then echo "pg: not running"; return; fi
  as_pg "$BIN/pg_ctl" stop -D "$DATA" -m fast -w >/dev/null
  echo "pg: stopped"
}

case ${1:-} in
  start) check_owner; start ;;
  stop) check_owner; stop ;;
  status) check_owner; running ;;
  url) echo "postgresql://ptce_admin:$(urlencode "$PASSWORD")@127.0.0.1:$PORT/ptce" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
