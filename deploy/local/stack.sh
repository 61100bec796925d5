#!/usr/bin/env bash
# stack.sh — starts and stops the whole local stack: PostgreSQL, Kafka, bootstrap, 3 services.
#   stack.sh up BUILD_DIR     start everything (idempotent), wait until every service is ready
#   stack.sh down             stop the services, then Kafka, then PostgreSQL
#   stack.sh env             print the variables a client needs (URLs, admin database URL)
# Environment (defaults are those of `make run`; `make test` overrides them):
#   PTCE_STATE_DIR      state folder (default <repo>/.state)
#   PTCE_PG_PORT        PostgreSQL port (15432)
#   PTCE_KAFKA_PORT     Kafka client port (19092); PTCE_KAFKA_CONTROLLER_PORT (19093)
#   PTCE_PORT_BASE      the services listen on BASE+1 (submission), +2 (instruction), +3 (funding)
#                       (default 8080)
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

admin_url() { "$ROOT/deploy/local/pg.sh" url; }
service_port() {
    case $1 in submission) echo $((PORT_BASE + 1)) ;; instruction) echo $((PORT_BASE + 2)) ;;
    funding) echo $((PORT_BASE + 3)) ;; esac
}
service_db_url() { echo "postgresql://ptce_$1:ptce_$1@127.0.0.1:$PTCE_PG_PORT/ptce"; }

# alive PID: the process exists and is not a zombie waiting to be reaped (kill -0 says yes then).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

service_start() {
    local name=$1 bin=$2/ptce-$1 pidf=$RUN_DIR/$1.pid
    if [ -f "$pidf" ] && alive "$(cat "$pidf")"; then return 0; fi
    # shellcheck disable=SC2086 # PTCE_SERVICE_ENV is a list of words on purpose
    env PTCE_DATABASE_URL="$(service_db_url "$name")" \
        PTCE_KAFKA_BROKERS="127.0.0.1:$PTCE_KAFKA_PORT" \
        PTCE_HTTP_PORT="$(service_port "$name")" \
        ${PTCE_SERVICE_ENV:-} \
        "$bin" >>"$RUN_DIR/$name.log" 2>&1 &
    echo $! >"$pidf"
}

wait_ready() {
    local name=$1 port i
    port=$(service_port "$name")
    for i in $(seq 1 150); do
        if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then return 0; fi
        if ! alive "$(cat "$RUN_DIR/$name.pid")"; then
            echo "stack: $name exited; last lines of its log:" >&2
            tail -n 20 "$RUN_DIR/$name.log" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "stack: $name not ready after 30 s" >&2
    tail -n 20 "$RUN_DIR/$name.log" >&2
    return 1
}

service_stop() {
    local pidf=$RUN_DIR/$1.pid pid i
    [ -f "$pidf" ] || return 0
    pid=$(cat "$pidf")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

up() {
    local build=$1 name
    mkdir -p "$RUN_DIR"
    "$ROOT/deploy/local/pg.sh" start
    "$ROOT/deploy/local/kafka.sh" start
    PTCE_ADMIN_DATABASE_URL=$(admin_url) "$build/ptce-admin" bootstrap
    for name in "${SERVICES[@]}"; do service_start "$name" "$build"; done
    for name in "${SERVICES[@]}"; do wait_ready "$name"; done
}

down() {
    local name
    for name in "${SERVICES[@]}"; do service_stop "$name"; done
    "$ROOT/deploy/local/kafka.sh" stop || true
    "$ROOT/deploy/local/pg.sh" stop || true
}

env_print() {
    echo "PTCE_ADMIN_DATABASE_URL=$(admin_url)"
    local name
    for name in "${SERVICES[@]}"; do
        echo "PTCE_URL_${name^^}=http://127.0.0.1:$(service_port "$name")"
    done
    echo "PTCE_KAFKA_BROKERS=127.0.0.1:$PTCE_KAFKA_PORT"
}

case ${1:-} in
up) up "${2:?usage: stack.sh up BUILD_DIR}" ;;
down) down ;;
env) env_print ;;
start-service) mkdir -p "$RUN_DIR"; service_start "$2" "$3"; wait_ready "$2" ;;
stop-service) service_stop "$2" ;;
*) echo "usage: stack.sh up BUILD_DIR | down | env | start-service NAME BUILD_DIR | stop-service NAME" >&2; exit 2 ;;
esac
