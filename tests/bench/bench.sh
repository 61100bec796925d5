#!/usr/bin/env bash
# bench.sh BUILD_DIR — `make bench`: wrk against the services and pgbench against PostgreSQL, on
# the same machine in the same run, on a throwaway stack bound to 127.0.0.1. Prints each figure
# and the ratios the issues ask for. Bounded: every load lasts PTCE_BENCH_SECONDS (default 10).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(realpath "${1:?usage: bench.sh BUILD_DIR}")
HERE=$ROOT/tests/bench
STACK=$ROOT/deploy/local/stack.sh
SECS=${PTCE_BENCH_SECONDS:-10}
CONNS=64

export PTCE_STATE_DIR=$(mktemp -d /tmp/ptce-bench.XXXXXX)
chmod 755 "$PTCE_STATE_DIR"
# Ports of the throwaway stack; PTCE_BENCH_PG_PORT and friends move it (two checkouts benching at once).
export PTCE_PG_PORT=${PTCE_BENCH_PG_PORT:-26432} PTCE_KAFKA_PORT=${PTCE_BENCH_KAFKA_PORT:-26092}
export PTCE_KAFKA_CONTROLLER_PORT=${PTCE_BENCH_KAFKA_CONTROLLER_PORT:-26093}
export PTCE_PORT_BASE=${PTCE_BENCH_PORT_BASE:-17080}
# The services run with their default settings (info-level access logs included); only the
# webhook needs its secret. PTCE_BENCH_SERVICE_ENV adds settings to try other ones.
# The per-key rate limit is raised far above what the loads below reach: they measure the
# service, not the limit.
export PTCE_SERVICE_ENV="PTCE_DS_WEBHOOK_TOKEN=bench-secret PTCE_RATE_LIMIT_RPS=10000000 PTCE_RATE_LIMIT_BURST=10000000 ${PTCE_BENCH_SERVICE_ENV:-}"
DSFAKE_PID=
# PTCE_BENCH_KEEP_LOGS=DIR keeps the services' logs of the run there.
trap '[ -z "${PTCE_BENCH_KEEP_LOGS:-}" ] || cp "$PTCE_STATE_DIR"/services/*.log "$PTCE_BENCH_KEEP_LOGS"/ 2>/dev/null; "$STACK" down >/dev/null 2>&1; [ -z "$DSFAKE_PID" ] || kill "$DSFAKE_PID" 2>/dev/null; rm -rf "$PTCE_STATE_DIR"' EXIT

# The DS fake, for instruction's write-back of decisions (bench_instruction.sh), with DS's
# rate limit of 400 requests a minute and token. Only instruction is pointed at it (BENCH_DS_ENV,
# given when that part restarts instruction): submission keeps running without DS, so the
# webhook loads above do not start fetches. PTCE_BENCH_INSTRUCTION_ENV adds instruction's own
# settings to it (PTCE_INBOX_CONSUMERS=2, to compare with the default).
mkfifo "$PTCE_STATE_DIR/dsfake.ready"
"${PTCE_CACHE_DIR:-$ROOT/.cache}/venv/bin/python" "$ROOT/tests/dsfake/dsfake.py" --port 0 \
    --token bench-ds-token --rate-limit 400 >"$PTCE_STATE_DIR/dsfake.ready" \
    2>"$PTCE_STATE_DIR/dsfake.log" &
DSFAKE_PID=$!
read -r _ DSFAKE_PORT <"$PTCE_STATE_DIR/dsfake.ready"
export DSFAKE_URL=http://127.0.0.1:$DSFAKE_PORT
export BENCH_DS_ENV="PTCE_DS_API_URL=$DSFAKE_URL PTCE_DS_TOKEN=bench-ds-token PTCE_DS_ALLOW_HTTP=1 \
PTCE_DS_INSTRUCTEUR_ID=SW5zdHJ1Y3RldXItMQ== ${PTCE_BENCH_INSTRUCTION_ENV:-}"

[ "${PTCE_BENCH_STATEMENTS:-}" != 1 ] || export PTCE_PG_STATEMENTS=1 # (statements_top below)
"$STACK" up "$BUILD" >/dev/null
eval "$("$STACK" env | sed 's/^/export /')"
DB=$PTCE_ADMIN_DATABASE_URL
SUB=$PTCE_URL_SUBMISSION
RESULTS=$PTCE_STATE_DIR/results
# The partner deposit every deposit load sends (the warm-up, POST /v1/dossiers, deposit -> visible).
DEPOSIT_BODY='{"carrier":{"siret":"73282932000074","name":"Bench"},"territory":{"name":"T","region":"84"},"members":[{"name":"a","kind":"ess_enterprise"},{"name":"b","kind":"other_enterprise"},{"name":"c","kind":"local_authority"}],"summary":"bench","legal_person_private":true,"prior_state_support":false}'
mkdir -p "$RESULTS"

# Every measurement starts from a fresh checkpoint, so none pays for the WAL of the one before
# (pgbench's 1M-row initialisation, the webhooks' inserts) with a checkpoint in the middle, and
# once the relays have published what the set-up wrote (the funding seeds write tens of thousands
# of events in one go, which the relay and the broker would otherwise be publishing during the
# load that follows; 60 s at most, then it says so and goes on).
outbox_backlog() {
    local sum="" s
    for s in submission instruction funding; do
        sum+="${sum:+ + }(SELECT count(*) FROM $s.outbox"
        sum+=" WHERE sent_at IS NULL AND dead_at IS NULL AND discarded_at IS NULL)"
    done
    psql "$DB" -X -qAt -c "SELECT $sum"
}
settle() {
    local left
    for _ in $(seq 600); do
        left=$(outbox_backlog)
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    [ "$left" = 0 ] || echo "settle: $left events still unpublished after 60 s" >&2
    psql "$DB" -qc CHECKPOINT
}

# drained_wait SECONDS: until instruction has applied every event submission sent, or SECONDS have
# passed (the warm-up's deposits, the submission part's: tens of thousands). A figure is measured
# from an idle consumer.
drained_wait() {
    local i left
    for i in $(seq 1 "$1"); do
        left=$(psql "$DB" -Atc "SELECT (SELECT count(*) FROM submission.outbox
                WHERE sent_at IS NOT NULL) - (SELECT count(*) FROM instruction.inbox
                WHERE topic = (SELECT topic FROM submission.outbox LIMIT 1))")
        [ "${left:-1}" -le 0 ] && { echo "instruction's backlog applied after ${i} s"; return 0; }
        sleep 1
    done
    echo "instruction still had $left events to apply after $1 s"
}

# The broker's JIT warm-up (PTCE_BENCH_WARMUP_S, default 60; 0: none), before anything is
# measured: the broker runs the JVM's tiered JIT (deploy/local/kafka.sh), whose C2 compiler
# takes about half the broker's CPU for its first minutes under load. A minute of deposits at
# 1 000 a second through the whole path (submission, its relay, instruction's consumers and
# relay, funding's consumer) compiles the broker's produce and fetch paths, then everything
# those deposits set off is published and applied, so that no figure pays for either.
broker_warmup() {
    local secs=${PTCE_BENCH_WARMUP_S:-60} wkey
    [ "$secs" -gt 0 ] || return 0
    wkey=$(PTCE_ADMIN_DATABASE_URL=$DB "$BUILD/ptce-admin" key create --role national_admin \
        --regions all --label bench-warmup)
    "$BUILD/paced-post" "$SUB/v1/dossiers" "$wkey" "$DEPOSIT_BODY" \
        --rate 1000 --seconds "$secs" --id-prefix warmup >/dev/null
    settle
    echo "broker warm-up: ${secs} s of deposits at 1 000/s; $(drained_wait 300)"
}

# The machine's CPU over a measured run (cpu_procs.py, from /proc): how busy the cores were, how
# much of the time the hypervisor gave to other guests (steal), the noise a figure was measured
# in; then where it went, per process group (each service, PostgreSQL's backends per role, the
# broker, the load generator), each as a share of the cores. cpu_mark prints the mark's file.
cpu_mark() {
    local procs
    procs=$(mktemp "$PTCE_STATE_DIR/cpu.XXXXXX")
    python3 "$HERE/cpu_procs.py" mark "$procs"
    echo "$procs"
}
cpu_since() { python3 "$HERE/cpu_procs.py" since "$1"; }

# PTCE_BENCH_STATEMENTS=1: PostgreSQL runs with pg_stat_statements, and a measured load can print
# the statements that took the most time (statements_reset before it, statements_top NAME after
# it). Their times are elapsed times, waits for a busy CPU included: compare calls and rows, and
# the shares of one run, not one run's times with another's.
statements_reset() {
    [ "${PTCE_BENCH_STATEMENTS:-}" = 1 ] || return 0
    psql "$DB" -X -qAt -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
        -c "SELECT pg_stat_statements_reset()" >/dev/null
}
statements_top() {
    [ "${PTCE_BENCH_STATEMENTS:-}" = 1 ] || return 0
    echo "statements of $1, by elapsed time (role, calls, ms, ms a call, rows, statement):"
    psql "$DB" -X -At -F ' | ' -c "SELECT r.rolname, s.calls, round(s.total_exec_time::numeric),
            round((s.total_exec_time / s.calls)::numeric, 3), s.rows,
            left(regexp_replace(s.query, '\s+', ' ', 'g'), 140)
        FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
        ORDER BY s.total_exec_time DESC LIMIT 15"
}

# wrk's summary → "rps p99_ms non2xx", after a 3 s warm-up (connections, prepared plans); the
# machine's CPU over the measured run in RESULTS/NAME.cpu. WRK_CONNS overrides the connection
# count for one call.
wrk_run() {
    local name=$1 conns=${WRK_CONNS:-$CONNS} mark
    shift
    wrk -t2 -c"$conns" -d3s "$@" >/dev/null
    settle
    mark=$(cpu_mark)
    wrk -t2 -c"$conns" -d"${SECS}s" --latency "$@" >"$RESULTS/$name.txt"
    cpu_since "$mark" >"$RESULTS/$name.cpu"
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$RESULTS/$name.txt")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$RESULTS/$name.txt")
    local non2xx
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$RESULTS/$name.txt")
    echo "$rps $p99 ${non2xx:-0}"
}

# "p50 … p90 …" of a wrk result, for the shape of the distribution behind its p99.
dist() {
    awk '$1 == "50%" {a=$2} $1 == "90%" {b=$2} END {printf "p50 %s, p90 %s", a, b}' "$RESULTS/$1.txt"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

pgbench_tps() {
    awk '/^tps/ {print $3; exit}' "$1"
}

echo "== pgbench (database alone, ${CONNS} clients, ${SECS}s each, fsync on)"
psql "$DB" -qc "CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY, procedure_id bigint, dossier_number bigint, payload text, received_at timestamptz DEFAULT now())"
pgbench -q -i -s 10 "$DB" >/dev/null 2>&1
# pgbench_insert NAME: the single-row insert at CONNS clients → "tps|cpu" (RESULTS/NAME.txt).
# The funding part runs it a second time, right before its own load (bench_funding.sh).
pgbench_insert() {
    local mark
    settle
    mark=$(cpu_mark)
    pgbench -n -M prepared -c "$CONNS" -j 2 -T "$SECS" -f "$HERE/insert.sql" -D aid=1 "$DB" \
        >"$RESULTS/$1.txt" 2>&1 || true
    echo "$(pgbench_tps "$RESULTS/$1.txt")|$(cpu_since "$mark")"
}
broker_warmup
IFS='|' read -r PG_INSERT PG_INSERT_CPU <<<"$(pgbench_insert pg_insert)"
settle
pgbench -n -M prepared -S -c "$CONNS" -j 2 -T "$SECS" "$DB" >"$RESULTS/pg_select.txt" 2>&1
pgbench -n -M prepared -S -c 16 -j 2 -T "$SECS" "$DB" >"$RESULTS/pg_select16.txt" 2>&1
PG_SELECT=$(pgbench_tps "$RESULTS/pg_select.txt")
PG_SELECT16=$(pgbench_tps "$RESULTS/pg_select16.txt")
echo "pgbench single-row insert: $PG_INSERT tps ($PG_INSERT_CPU)"
echo "pgbench prepared point select: $PG_SELECT tps ($CONNS clients), $PG_SELECT16 tps (16 clients)"

if [[ -z ${PTCE_BENCH_ONLY:-} || $PTCE_BENCH_ONLY == submission ]]; then
    echo "== wrk (${CONNS} keep-alive connections, 2 threads, ${SECS}s each)"
    read -r HZ_RPS HZ_P99 HZ_BAD <<<"$(wrk_run healthz "$SUB/healthz")"
    echo "GET /healthz: $HZ_RPS req/s, p99 ${HZ_P99} ms ($(dist healthz)), non-2xx $HZ_BAD"

    read -r WH_RPS WH_P99 WH_BAD <<<"$(wrk_run webhook -s "$HERE/webhook.lua" "$SUB/v1/webhooks/ds/bench-secret")"
    echo "POST /v1/webhooks/ds/{token}: $WH_RPS req/s, p99 ${WH_P99} ms ($(dist webhook)), non-2xx $WH_BAD"

    # Dossiers to read: partner deposits through the API, as a partner platform would make them.
    KEY=$(PTCE_ADMIN_DATABASE_URL=$DB "$BUILD/ptce-admin" key create --role national_admin --regions all --label bench)
    for i in $(seq 1 200); do
        curl -fsS -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
            -H "Idempotency-Key: bench-$i" -d "$DEPOSIT_BODY" "$SUB/v1/dossiers"
    done
    psql "$DB" -Atc "SELECT id FROM submission.dossier LIMIT 200" >"$RESULTS/ids.txt"
    read -r GD_RPS GD_P99 GD_BAD <<<"$(wrk_run get_dossier -s "$HERE/get_dossier.lua" "$SUB" -- "$RESULTS/ids.txt" "$KEY")"
    echo "GET /v1/dossiers/{id}: $GD_RPS req/s, p99 ${GD_P99} ms ($(dist get_dossier)), non-2xx $GD_BAD"
    read -r G16_RPS G16_P99 G16_BAD <<<"$(WRK_CONNS=16 wrk_run get_dossier16 -s "$HERE/get_dossier.lua" "$SUB" -- "$RESULTS/ids.txt" "$KEY")"
    echo "GET /v1/dossiers/{id} at 16 connections: $G16_RPS req/s, p99 ${G16_P99} ms ($(dist get_dossier16)), non-2xx $G16_BAD"

    read -r HI_RPS HI_P99 HI_BAD <<<"$(wrk_run history -s "$HERE/history.lua" "$SUB" -- "$RESULTS/ids.txt" "$KEY")"
    echo "GET /v1/dossiers/{id}/history: $HI_RPS req/s, p99 ${HI_P99} ms ($(dist history)), non-2xx $HI_BAD"
    read -r LI_RPS LI_P99 LI_BAD <<<"$(wrk_run list -H "Authorization: Bearer $KEY" "$SUB/v1/dossiers?limit=50")"
    echo "GET /v1/dossiers?limit=50: $LI_RPS req/s, p99 ${LI_P99} ms ($(dist list)), non-2xx $LI_BAD"
    # Last: every request deposits a new dossier, which would change what the reads above see.
    read -r CR_RPS CR_P99 CR_BAD <<<"$(wrk_run create -s "$HERE/create_dossier.lua" "$SUB" -- "$KEY" "$DEPOSIT_BODY")"
    echo "POST /v1/dossiers: $CR_RPS req/s, p99 ${CR_P99} ms ($(dist create)), non-2xx $CR_BAD"

    echo "== figures of the issues (same run)"
    echo "healthz: $HZ_RPS req/s (target >= 40000)"
    echo "webhook intake / pgbench insert: $(ratio "$WH_RPS" "$PG_INSERT") (target >= 0.40), p99 ${WH_P99} ms (target <= 25)"
    echo "GET dossier / pgbench point select, $CONNS connections: $(ratio "$GD_RPS" "$PG_SELECT") (target >= 0.40), p99 ${GD_P99} ms (target <= 10)"
    echo "GET dossier / pgbench point select, 16 connections: $(ratio "$G16_RPS" "$PG_SELECT16") (target >= 0.40), p99 ${G16_P99} ms (target <= 10)"
fi

# The instruction and funding figures, on the same stack and against the same pgbench figures
# (each script reads PG_INSERT, PG_SELECT, PG_SELECT16, the helpers above and the stack's env).
# PTCE_BENCH_ONLY=instruction|funding|submission narrows a development run.
for part in instruction funding; do
    if [ -f "$HERE/bench_$part.sh" ] && [[ -z ${PTCE_BENCH_ONLY:-} || $PTCE_BENCH_ONLY == "$part" ]]; then
        # shellcheck source=/dev/null
        source "$HERE/bench_$part.sh"
    fi
done
