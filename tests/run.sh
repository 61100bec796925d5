#!/usr/bin/env bash
# run.sh BUILD_DIR — `make test`: a throwaway stack (PostgreSQL, Kafka, the DS fake, the three
# services built with sanitizers), then every unit and system test. Exits non-zero on any
# failure and leaves no process behind.
# For development, two filters narrow the run and one keeps its logs (CI sets none of them):
#   PTCE_TEST_UNIT    a glob of unit test names (default test_*; "none" runs none)
#   PTCE_TEST_PYTEST  the pytest arguments (default: tests/dsfake tests/system; "none": none)
#   PTCE_TEST_KEEP_STATE  when set, the state directory (service and stack logs) is kept
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(realpath "${1:?usage: tests/run.sh BUILD_DIR}")
STACK=$ROOT/deploy/local/stack.sh
VENV=${PTCE_CACHE_DIR:-$ROOT/.cache}/venv

export PTCE_STATE_DIR=$(mktemp -d /tmp/ptce-test.XXXXXX)
chmod 755 "$PTCE_STATE_DIR"
export PTCE_PG_PORT=${PTCE_TEST_PG_PORT:-25432}
export PTCE_KAFKA_PORT=${PTCE_TEST_KAFKA_PORT:-29092}
export PTCE_KAFKA_CONTROLLER_PORT=${PTCE_TEST_KAFKA_CONTROLLER_PORT:-29093}
export PTCE_PORT_BASE=${PTCE_TEST_PORT_BASE:-18080}
export PTCE_BUILD=$BUILD PTCE_STACK=$STACK PTCE_ROOT=$ROOT
export PTCE_DS_WEBHOOK_TOKEN=test-webhook-secret
# A broker that lives for one run: C1 only, ready at once, with no C2 compiler taking CPU from
# the tests for its first minutes (deploy/local/kafka.sh).
export PTCE_KAFKA_JIT_OPTS=${PTCE_KAFKA_JIT_OPTS--XX:TieredStopAtLevel=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
DSFAKE_PID=

cleanup() {
    "$STACK" down >/dev/null 2>&1
    [ -n "$DSFAKE_PID" ] && kill "$DSFAKE_PID" 2>/dev/null
    if [ -n "${PTCE_TEST_KEEP_STATE:-}" ]; then
        echo "== state kept in $PTCE_STATE_DIR" >&2
    else
        rm -rf "$PTCE_STATE_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failures=0
passed=0
record() { if [ "$1" -eq 0 ]; then passed=$((passed + 1)); else failures=$((failures + 1)); echo "FAILED: $2"; fi; }

# The DS fake: the submission service talks to it as it would to démarches-simplifiées.
mkfifo "$PTCE_STATE_DIR/dsfake.ready"
"$VENV/bin/python" "$ROOT/tests/dsfake/dsfake.py" --port 0 --token test-ds-token \
    >"$PTCE_STATE_DIR/dsfake.ready" 2>"$PTCE_STATE_DIR/dsfake.log" &
DSFAKE_PID=$!
read -r _ DSFAKE_PORT <"$PTCE_STATE_DIR/dsfake.ready"
export DSFAKE_URL=http://127.0.0.1:$DSFAKE_PORT
# Short retry and poll periods keep the fault tests quick; the auth cache is short so that a
# revoked key is refused within the tests' patience.
export PTCE_SERVICE_ENV="PTCE_DS_API_URL=$DSFAKE_URL PTCE_DS_TOKEN=test-ds-token PTCE_DS_ALLOW_HTTP=1 \
PTCE_DS_INSTRUCTEUR_ID=SW5zdHJ1Y3RldXItMQ== \
PTCE_DS_WEBHOOK_TOKEN=$PTCE_DS_WEBHOOK_TOKEN PTCE_DS_POLL_INTERVAL_S=1 \
PTCE_DS_RETRY_MAX_MS=1500 PTCE_DS_TIMEOUT_MS=3000 PTCE_AUTH_CACHE_TTL_MS=100 \
PTCE_HTTP_BODY_LIMIT=65536 PTCE_LOG_LEVEL=info \
PTCE_AUTH_FAILURE_RPS=1000 PTCE_AUTH_FAILURE_BURST=1000000"
# (Every test calls from 127.0.0.1, and many send wrong keys on purpose: the per-client
# failure throttle is raised for the run; tests/system/test_http_edges.py checks it with its own.)

echo "== stack (state in $PTCE_STATE_DIR)"
if ! "$STACK" up "$BUILD"; then
    echo "the stack did not start"
    exit 1
fi
eval "$("$STACK" env | sed 's/^/export /')"
export PTCE_TEST_DATABASE_URL=$PTCE_ADMIN_DATABASE_URL
export PTCE_TEST_KAFKA_BROKERS=$PTCE_KAFKA_BROKERS

echo "== unit tests"
for t in "$BUILD"/tests/${PTCE_TEST_UNIT:-test_*}; do
    [ -x "$t" ] || continue
    timeout 300 "$t"
    record $? "$(basename "$t")"
done

echo "== system tests"
if [ "${PTCE_TEST_PYTEST:-}" != none ]; then
    # shellcheck disable=SC2086 # the filter is a list of words on purpose
    timeout 1200 "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
        ${PTCE_TEST_PYTEST:-"$ROOT/tests/dsfake" "$ROOT/tests/system"}
    record $? "pytest"
fi

echo "== stopping the stack"
"$STACK" down >/dev/null 2>&1
# Sanitizer reports of the services (leaks are reported when they exit).
if grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' \
    "$PTCE_STATE_DIR"/services/*.log >/dev/null 2>&1; then
    grep -h -A 30 -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' \
        "$PTCE_STATE_DIR"/services/*.log | head -n 80
    record 1 "sanitizer report in a service log"
else
    record 0 "services clean under ASan/UBSan"
fi

echo "suites: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
