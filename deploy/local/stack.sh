#!/usr/bin/env bash
# stack.sh — starts and stops the whole local stack: PostgreSQL, Kafka, bootstrap, 3 services.
#   stack.sh up BUILD_DIR [--replicas N]   start everything (idempotent), N replicas of each
#                                         service (default PTCE_REPLICAS, else 1), wait until
#                                         every one is ready
#   stack.sh down                         stop every replica of the services, then Kafka, then
#                                         PostgreSQL
#   stack.sh env                          print the variables a client needs (URLs, admin
#                                         database URL; PTCE_URL_<SERVICE>_<K> for each running
#                                         replica K > 0)
#   stack.sh start-service NAME BUILD_DIR [K]   start replica K (default 0) of one service
#   stack.sh stop-service NAME [K]              stop replica K (default 0) of one service
# Replicas share the database, the schema and the consumer group; replica K listens on
# BASE + 10*K + 1 (submission), +2 (instruction), +3 (funding), K from 0 to 9. Replica 0 keeps
# the file names services/NAME.pid and NAME.log; replica K > 0 has NAME.K.pid and NAME.K.log.
# Each replica's database sessions carry application_name=NAME-K (see pg_stat_activity).
# Environment (defaults are those of `make run`; `make test` overrides them):
#   PTCE_STATE_DIR      state folder (default <repo>/.state)
#   PTCE_PG_PORT        PostgreSQL port (15432)
#   PTCE_KAFKA_PORT     Kafka client port (19092); PTCE_KAFKA_CONTROLLER_PORT (19093)
#   PTCE_PORT_BASE      the ports above are counted from it (default 8080)
#   PTCE_REPLICAS       replicas of each service started by `up` (default 1, at most 10)
#   PTCE_SERVICE_ENV    extra "NAME=value" words given to every service (tests use it)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PTCE_STATE_DIR=$(realpath -m "${PTCE_STATE_DIR:-$ROOT/.state}")
export PTCE_PG_PORT=${PTCE_PG_PORT:-15432}
export PTCE_KAFKA_PORT=${PTCE_KAFKA_PORT:-19092}
export PTCE_KAFKA_CONTROLLER_PORT=${PTCE_KAFKA_CONTROLLER_PORT:-19093}
PORT_BASE=${PTCE_PORT_BASE:-8080}
SERVICES=(submission instruction funding)
RUN_DIR=$PTCE_STATE_DIR/services
MAX_REPLICAS=10

die() { echo "stack: $*" >&2; exit 2; }
admin_url() { "$ROOT/deploy/local/pg.sh" url; }

check_service() {
    case ${1:-} in submission | instruction | funding) ;; *) die "unknown service '${1:-}'" ;; esac
}
check_replica() {
    [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -lt "$MAX_REPLICAS" ] ||
        die "replica must be a number from 0 to $((MAX_REPLICAS - 1)), not '$1'"
}

# service_port NAME [K]: BASE + 10*K + the service's offset.
service_port() {
    local off
    case $1 in submission) off=1 ;; instruction) off=2 ;; funding) off=3 ;; esac
    echo $((PORT_BASE + 10 * ${2:-0} + off))
}
service_db_url() {
    echo "postgresql://ptce_$1:ptce_$1@127.0.0.1:$PTCE_PG_PORT/ptce?application_name=$1-${2:-0}"
}
# replica_file NAME K EXT: replica 0 keeps NAME.EXT, the others get NAME.K.EXT.
replica_file() {
    if [ "$2" -eq 0 ]; then echo "$RUN_DIR/$1.$3"; else echo "$RUN_DIR/$1.$2.$3"; fi
}

# alive PID: the process exists and is not a zombie waiting to be reaped (kill -0 says yes then).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

service_start() {
    local name=$1 bin=$2/ptce-$1 k=${3:-0} pidf
    pidf=$(replica_file "$name" "$k" pid)
    if [ -f "$pidf" ] && alive "$(cat "$pidf")"; then return 0; fi
    # shellcheck disable=SC2086 # PTCE_SERVICE_ENV is a list of words on purpose
    env PTCE_DATABASE_URL="$(service_db_url "$name" "$k")" \
        PTCE_KAFKA_BROKERS="127.0.0.1:$PTCE_KAFKA_PORT" \
        PTCE_HTTP_PORT="$(service_port "$name" "$k")" \
        ${PTCE_SERVICE_ENV:-} \
        "$bin" >>"$(replica_file "$name" "$k" log)" 2>&1 &
    echo $! >"$pidf"
}

wait_ready() {
    local name=$1 k=${2:-0} port i pidf logf
    port=$(service_port "$name" "$k")
    pidf=$(replica_file "$name" "$k" pid)
    logf=$(replica_file "$name" "$k" log)
    for i in $(seq 1 150); do
        if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then return 0; fi
        if ! alive "$(cat "$pidf")"; then
            echo "stack: $name (replica $k) exited; last lines of its log:" >&2
            tail -n 20 "$logf" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "stack: $name (replica $k) not ready after 30 s" >&2
    tail -n 20 "$logf" >&2
    return 1
}

stop_pid_file() {
    local pidf=$1 pid i
    [ -f "$pidf" ] || return 0
    pid=$(cat "$pidf")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

service_stop() { stop_pid_file "$(replica_file "$1" "${2:-0}" pid)"; }

# The replicas K > 0 of NAME that have a pid file, in order.
extra_replicas() {
    local f k
    for f in "$RUN_DIR/$1".*.pid; do
        [ -f "$f" ] || continue
        k=${f#"$RUN_DIR/$1".}
        k=${k%.pid}
        [[ $k =~ ^[0-9]+$ ]] && echo "$k"
    done | sort -n
}

up() {
    local build=$1 replicas=$2 name k
    mkdir -p "$RUN_DIR"
    "$ROOT/deploy/local/pg.sh" start
    "$ROOT/deploy/local/kafka.sh" start
    PTCE_ADMIN_DATABASE_URL=$(admin_url) "$build/ptce-admin" bootstrap
    for ((k = 0; k < replicas; k++)); do
        for name in "${SERVICES[@]}"; do service_start "$name" "$build" "$k"; done
    done
    for ((k = 0; k < replicas; k++)); do
        for name in "${SERVICES[@]}"; do wait_ready "$name" "$k"; done
    done
}

down() {
    local name k
    for name in "${SERVICES[@]}"; do
        for k in $(extra_replicas "$name"); do service_stop "$name" "$k"; done
        service_stop "$name" 0
    done
    "$ROOT/deploy/local/kafka.sh" stop || true
    "$ROOT/deploy/local/pg.sh" stop || true
}

env_print() {
    echo "PTCE_ADMIN_DATABASE_URL=$(admin_url)"
    local name k
    for name in "${SERVICES[@]}"; do
        echo "PTCE_URL_${name^^}=http://127.0.0.1:$(service_port "$name")"
        for k in $(extra_replicas "$name"); do
            alive "$(cat "$(replica_file "$name" "$k" pid)")" || continue
            echo "PTCE_URL_${name^^}_$k=http://127.0.0.1:$(service_port "$name" "$k")"
        done
    done
    echo "PTCE_KAFKA_BROKERS=127.0.0.1:$PTCE_KAFKA_PORT"
}

# up BUILD_DIR [--replicas N]
up_main() {
    local build=${1:-} replicas=${PTCE_REPLICAS:-1}
    [ -n "$build" ] || die "usage: stack.sh up BUILD_DIR [--replicas N]"
    shift
    if [ "${1:-}" = --replicas ]; then replicas=${2:-}; elif [ $# -gt 0 ]; then die "unknown option '$1'"; fi
    [[ $replicas =~ ^[0-9]+$ ]] && [ "$replicas" -ge 1 ] && [ "$replicas" -le "$MAX_REPLICAS" ] ||
        die "replicas must be a number from 1 to $MAX_REPLICAS, not '$replicas'"
    up "$build" "$replicas"
}

USAGE="usage: stack.sh up BUILD_DIR [--replicas N] | down | env |
       start-service NAME BUILD_DIR [K] | stop-service NAME [K]"
case ${1:-} in
up) shift; up_main "$@" ;;
down) down ;;
env) env_print ;;
start-service)
    check_service "${2:-}"; [ -n "${3:-}" ] || die "$USAGE"; check_replica "${4:-0}"
    mkdir -p "$RUN_DIR"; service_start "$2" "$3" "${4:-0}"; wait_ready "$2" "${4:-0}" ;;
stop-service) check_service "${2:-}"; check_replica "${3:-0}"; service_stop "$2" "${3:-0}" ;;
*) echo "$USAGE" >&2; exit 2 ;;
esac
