#!/usr/bin/env bash
# Self-test of the local stack scripts (pg.sh, kafka.sh): on a throwaway state folder and free
# ports, start PostgreSQL and Kafka, check both answer and that a second start is a no-op,
# restart them and check the data survived, stop them, check no process is left, remove the
# folder. Needs the Kafka jars (deploy/local/deps.sh). Works as root or as a normal user.
# Environment:
#   PTCE_CACHE_DIR             where kafka.sh finds kafka/libs (default: <repo>/.cache)
#   PTCE_PG_BIN                PostgreSQL binaries, for psql (default: /usr/lib/postgresql/15/bin)
#   PTCE_SELFTEST_SKIP_KAFKA   set to 1 to test PostgreSQL only
# PTCE_STATE_DIR and the PTCE_*_PORT variables are set by this script.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PSQL=${PTCE_PG_BIN:-/usr/lib/postgresql/15/bin}/psql
KAFKA=$([[ ${PTCE_SELFTEST_SKIP_KAFKA:-} == 1 ]] && echo false || echo true)

PTCE_STATE_DIR=$(mktemp -d)
chmod 755 "$PTCE_STATE_DIR"   # as root, the postgres user must be able to enter it
export PTCE_STATE_DIR

cleanup() {
  "$HERE/kafka.sh" stop >/dev/null 2>&1 || true
  "$HERE/pg.sh" stop >/dev/null 2>&1 || true
  rm -rf "$PTCE_STATE_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # so that Ctrl-C still runs cleanup

fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
port_open() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Three distinct random ports nobody listens on.
ports=()
while ((${#ports[@]} < 3)); do
  p=$((42000 + RANDOM % 8000))
  if [[ " ${ports[*]} " != *" $p "* ]] && ! port_open "$p"; then ports+=("$p"); fi
done
export PTCE_PG_PORT=${ports[0]} PTCE_KAFKA_PORT=${ports[1]} PTCE_KAFKA_CONTROLLER_PORT=${ports[2]}

# Run "script action" and print how long it took.
timed() {
  local t0=${EPOCHREALTIME/./} ds
  "$@"
  ds=$(((${EPOCHREALTIME/./} - t0) / 100000))
  echo "  $(basename "$1") $2 took $((ds / 10)).$((ds % 10)) s"
}

sql() { "$PSQL" -X -q -tA -v ON_ERROR_STOP=1 "$("$HERE/pg.sh" url)" -c "$1"; }

start_all() {
  timed "$HERE/pg.sh" start
  if $KAFKA; then timed "$HERE/kafka.sh" start; fi
}

stop_all() {
  if $KAFKA; then "$HERE/kafka.sh" stop; fi
  "$HERE/pg.sh" stop
  ! "$HERE/pg.sh" status || fail "pg still running after stop"
  ! "$HERE/kafka.sh" status || fail "kafka still running after stop"
  for p in "$PTCE_PG_PORT" "$PTCE_KAFKA_PORT" "$PTCE_KAFKA_CONTROLLER_PORT"; do
    ! port_open "$p" || fail "port $p still open after stop"
  done
}

echo "selftest: state $PTCE_STATE_DIR, ports pg $PTCE_PG_PORT kafka $PTCE_KAFKA_PORT/$PTCE_KAFKA_CONTROLLER_PORT, user $(id -un)"
start_all
again=$(start_all)
[[ $(grep -c 'already running' <<<"$again") == $($KAFKA && echo 2 || echo 1) ]] ||
  fail "second start was not a no-op: $again"
[[ $(sql 'select 1') == 1 ]] || fail "psql select 1"
sql "create table selftest (v text); insert into selftest values ('kept')"
if $KAFKA; then port_open "$PTCE_KAFKA_PORT" || fail "kafka port $PTCE_KAFKA_PORT does not answer"; fi

stop_all
start_all
[[ $(sql 'select v from selftest') == kept ]] || fail "pg data lost across restart"
if $KAFKA; then port_open "$PTCE_KAFKA_PORT" || fail "kafka port does not answer after restart"; fi
stop_all

# No process may still mention the state folder on its command line.
for f in /proc/[0-9]*/cmdline; do
  if grep -qaF -- "$PTCE_STATE_DIR/" "$f" 2>/dev/null; then
    fail "process left behind: ${f%/cmdline} $(tr '\0' ' ' <"$f")"
  fi
done
echo "selftest: OK"
