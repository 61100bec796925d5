# bench_instruction.sh — sourced by bench.sh (its variables and helpers, the stack's env): the
# instruction service's three figures of the issue, measured in the same run as pgbench.
#   1. a partner deposit's commit in submission → the dossier visible in instruction, at a
#      paced rate (PTCE_BENCH_DEPOSIT_RATE, default 1000 a second, for PTCE_BENCH_SECONDS);
#   2. GET /v1/rankings with a region filter over 100 000 dossiers, at 16 connections;
#   3. a bulk decision of 500 dossiers, and its write-back drained into the DS fake at DS's
#      limit (observed for PTCE_BENCH_DRAIN_SECONDS, default 90: 500 at 400 a minute is 75 s).
VENV_PY=${PTCE_CACHE_DIR:-$ROOT/.cache}/venv/bin/python
DEPOSIT_RATE=${PTCE_BENCH_DEPOSIT_RATE:-1000}
DRAIN_SECS=${PTCE_BENCH_DRAIN_SECONDS:-90}
INS=$PTCE_URL_INSTRUCTION

# Instruction runs pointed at the DS fake that bench.sh started (its write-back needs it).
PTCE_SERVICE_ENV="$PTCE_SERVICE_ENV $BENCH_DS_ENV" "$STACK" stop-service instruction
PTCE_SERVICE_ENV="$PTCE_SERVICE_ENV $BENCH_DS_ENV" "$STACK" start-service instruction "$BUILD"
IKEY=$(PTCE_ADMIN_DATABASE_URL=$DB "$BUILD/ptce-admin" key create --role national_admin \
    --regions all --label bench-instruction)

echo "== instruction"
# ---- 1. deposit → visible ----
# Both sides' commits are stamped by the database itself: a deferred constraint trigger runs at
# COMMIT, just before the commit record is flushed, and notes clock_timestamp() (one server, one
# clock) in an unlogged table, for submission.dossier's row (the deposit) and for
# instruction.dossier's first insert (the projection, which instruction's API reads). Their
# difference is the time from the deposit's commit to the moment instruction's API would show
# it, give or take the difference between the two commits' WAL flushes.
psql "$DB" -q <<'SQL'
CREATE UNLOGGED TABLE public.bench_visible (id uuid, side text, at timestamptz);
CREATE FUNCTION public.bench_mark() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = public AS $$
BEGIN
    INSERT INTO public.bench_visible VALUES (NEW.id, TG_ARGV[0], clock_timestamp());
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER bench_committed AFTER INSERT ON submission.dossier
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.bench_mark('submission');
CREATE CONSTRAINT TRIGGER bench_committed AFTER INSERT ON instruction.dossier
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.bench_mark('instruction');
SQL
# visible_wait SECONDS: until every deposit stamped is projected too, or SECONDS have passed.
visible_wait() {
    local i
    for i in $(seq 1 "$1"); do
        [ "$(psql "$DB" -Atc "SELECT count(*) FILTER (WHERE side = 'submission')
            - count(*) FILTER (WHERE side = 'instruction') FROM public.bench_visible")" -le 0 ] &&
            return 0
        sleep 1
    done
}
paced() {
    "$BUILD/paced-post" "$PTCE_URL_SUBMISSION/v1/dossiers" "$IKEY" "$DEPOSIT_BODY" \
        --rate "$DEPOSIT_RATE" --seconds "$1" --id-prefix "$2"
}
drained_wait 300
paced 3 visible-warmup >/dev/null # connections, prepared plans, the consumer's fetch
visible_wait 60
psql "$DB" -qc "TRUNCATE public.bench_visible"
settle
statements_reset
# What PostgreSQL ran in the background during the load (a stall's usual suspects).
pg_background() {
    psql "$DB" -XAt -F ' ' -c "SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),
        (SELECT sum(autovacuum_count) FROM pg_stat_all_tables), (SELECT sum(autoanalyze_count) FROM pg_stat_all_tables)"
}
read -r BG_CK0 BG_AV0 BG_AA0 <<<"$(pg_background)"
# The broker's collector pauses during the load: the lines its gc.log gains (deploy/local/kafka.sh).
GC_LOG=$PTCE_STATE_DIR/kafka/logs/gc.log
GC_LINES0=$(wc -l <"$GC_LOG" 2>/dev/null || echo 0)
VI_MARK=$(cpu_mark)
paced "$SECS" visible >"$RESULTS/visible_load.json"
VI_CPU=$(cpu_since "$VI_MARK")
read -r BG_CK1 BG_AV1 BG_AA1 <<<"$(pg_background)"
GC_PAUSES=$(tail -n +"$((GC_LINES0 + 1))" "$GC_LOG" 2>/dev/null | awk '/Pause/ && $NF ~ /ms$/ {
    ms = $NF + 0; n++; sum += ms; if (ms > max) max = ms }
    END { printf "%d pauses, %.1f ms in all, the longest %.1f ms", n, sum, max }')
statements_top "deposit → visible"
visible_wait 60
read -r VI_N VI_MISSING VI_P50 VI_P99 VI_MAX <<<"$(psql "$DB" -At -F ' ' -c "
    SELECT count(i.at), count(*) - count(i.at),
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
           round(max(ms)::numeric, 1)
    FROM public.bench_visible s LEFT JOIN public.bench_visible i ON i.id = s.id
        AND i.side = 'instruction',
    LATERAL (SELECT extract(epoch FROM i.at - s.at) * 1000 AS ms) x
    WHERE s.side = 'submission'")"
VI_SENT=$("$VENV_PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["rate_held"], d["status"].get("201", 0), d["latency_p99_ms"], d["cpu_ms"])' \
    <"$RESULTS/visible_load.json")
read -r VI_HELD VI_201 VI_ANS99 VI_GEN_MS <<<"$VI_SENT"
# The deposit rate really held: deposits committed per second, from the first commit to the last.
VI_RATE=$(psql "$DB" -Atc "SELECT round(count(*) / greatest(extract(epoch FROM max(at) - min(at)), 0.001))
    FROM public.bench_visible WHERE side = 'submission'")
# Where the time goes: submission's relay marks its outbox row sent once Kafka acknowledged the
# event; then the acknowledgement to the start of instruction's transaction (its inbox row's
# applied_at), and that transaction's start to its commit. (percentile_cont skips the NULLs of
# deposits not sent or not projected.)
read -r VI_PUB50 VI_PUB99 VI_FLY50 VI_FLY99 VI_TX50 VI_TX99 <<<"$(psql "$DB" -At -F ' ' -c "
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY pub)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY pub)::numeric, 1),
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY fly)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY fly)::numeric, 1),
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY tx)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY tx)::numeric, 1)
    FROM public.bench_visible s
    JOIN (SELECT DISTINCT ON (key) key, sent_at, event_id FROM submission.outbox
           ORDER BY key, sent_at NULLS LAST) o ON o.key = s.id::text
    LEFT JOIN public.bench_visible i ON i.id = s.id AND i.side = 'instruction'
    LEFT JOIN instruction.inbox ib ON ib.event_id = o.event_id,
    LATERAL (SELECT extract(epoch FROM o.sent_at - s.at) * 1000 AS pub,
                    extract(epoch FROM ib.applied_at - o.sent_at) * 1000 AS fly,
                    extract(epoch FROM i.at - ib.applied_at) * 1000 AS tx) x
    WHERE s.side = 'submission'")"
echo "deposit → visible in instruction: p50 ${VI_P50} ms, p99 ${VI_P99} ms, max ${VI_MAX} ms over $VI_N deposits ($VI_MISSING not visible after 60 s); paced at $DEPOSIT_RATE/s, sent at $VI_HELD/s, committed at $VI_RATE/s; $VI_201 answered 201, answer p99 ${VI_ANS99} ms from each request's due time (the generator took ${VI_GEN_MS} ms of CPU); acknowledged by Kafka to submission's relay p50 ${VI_PUB50} ms, p99 ${VI_PUB99} ms after the commit; from that acknowledgement to the start of instruction's transaction p50 ${VI_FLY50} ms, p99 ${VI_FLY99} ms, that transaction p50 ${VI_TX50} ms, p99 ${VI_TX99} ms; $VI_CPU during the load"
# Second by second (from the first deposit): the p99 and the max, to tell a steady queue from
# stalls (a checkpoint, a pause of the broker's JVM, a vacuum) that a run-wide p99 would hide.
psql "$DB" -At -c "
    SELECT 'deposit → visible, second by second (p99/max ms): ' || string_agg(p99 || '/' || mx, ' ' ORDER BY sec)
      FROM (SELECT floor(extract(epoch FROM s.at - t0.at))::int AS sec,
                   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric) AS p99,
                   round(max(ms)::numeric) AS mx
              FROM public.bench_visible s
              JOIN public.bench_visible i ON i.id = s.id AND i.side = 'instruction'
              CROSS JOIN (SELECT min(at) AS at FROM public.bench_visible WHERE side = 'submission') t0,
              LATERAL (SELECT extract(epoch FROM i.at - s.at) * 1000 AS ms) x
             WHERE s.side = 'submission' GROUP BY 1) y"
echo "during the load, PostgreSQL ran $((BG_CK1 - BG_CK0)) checkpoints, $((BG_AV1 - BG_AV0)) autovacuums and $((BG_AA1 - BG_AA0)) autoanalyzes"
echo "during the load, the broker's collector made ${GC_PAUSES:-no log}"
# Deposits not visible: where they stand (never sent, sent but not in instruction's inbox, in
# the inbox but not projected), and instruction's dead letters.
if [ "${VI_MISSING:-0}" -gt 0 ]; then
    psql "$DB" -At -F ' ' -c "
        SELECT 'not visible: ' || count(*) FILTER (WHERE o.sent_at IS NULL) || ' unsent in submission''s outbox, '
               || count(*) FILTER (WHERE o.sent_at IS NOT NULL AND ib.event_id IS NULL) || ' sent but not in instruction''s inbox, '
               || count(*) FILTER (WHERE ib.event_id IS NOT NULL) || ' in the inbox, not projected; '
               || (SELECT count(*) FROM instruction.inbox_dead_letter) || ' dead letters in instruction'
          FROM public.bench_visible s
          LEFT JOIN public.bench_visible i ON i.id = s.id AND i.side = 'instruction'
          LEFT JOIN submission.outbox o ON o.key = s.id::text
          LEFT JOIN instruction.inbox ib ON ib.event_id = o.event_id
         WHERE s.side = 'submission' AND i.id IS NULL"
fi
psql "$DB" -qc "DROP TRIGGER bench_committed ON submission.dossier" \
    -c "DROP TRIGGER bench_committed ON instruction.dossier" -c "DROP TABLE public.bench_visible" \
    -c "DROP FUNCTION public.bench_mark()"

# ---- 2. rankings over 100 000 dossiers ----
# One wave of 100 000 dossiers written straight into instruction's tables, spread over the 18
# regions roughly as the population is (Île-de-France the largest, Mayotte and Corse the
# smallest), in every state of the lifecycle; those past regional review have a consolidated
# score and spread, the others none yet.
psql "$DB" -q <<'SQL'
INSERT INTO instruction.wave (id, label, phase2_slots) VALUES ('bench-2025', 'Bench', 20);
WITH r(code, w) AS (VALUES ('11', 180), ('84', 120), ('75', 90), ('76', 90), ('32', 90),
        ('44', 80), ('93', 75), ('52', 55), ('53', 50), ('28', 50), ('27', 42), ('24', 38),
        ('94', 5), ('01', 7), ('02', 7), ('03', 5), ('04', 12), ('06', 4)),
    c AS (SELECT code, sum(w) OVER (ORDER BY code) - w AS lo, sum(w) OVER (ORDER BY code) AS hi,
                 sum(w) OVER () AS total FROM r),
    s(name, lo, hi) AS (VALUES ('received', 0, 15), ('regional_review', 15, 35),
        ('correction_requested', 35, 38), ('awaiting_decision', 38, 60),
        ('phase1_laureate', 60, 80), ('refused', 80, 92), ('closed', 92, 97),
        ('phase2_invited', 97, 100)),
    g AS (SELECT n, random() AS pr, random() * 100 AS ps FROM generate_series(1, 100000) n)
INSERT INTO instruction.dossier (id, region, wave, title, source_state, snapshot, last_event_id,
                                 state, group_id, ds_number, deposited_at, score1, spread1)
SELECT gen_random_uuid(), c.code, 'bench-2025', 'PTCE bench ' || g.n, 'deposited',
       jsonb_build_object('title', 'PTCE bench ' || g.n), gen_random_uuid(), s.name,
       'region-' || c.code, 0, now() - (g.n % 300) * interval '1 day',
       CASE WHEN s.lo >= 35 THEN (random() * 10000)::int END,
       CASE WHEN s.lo >= 35 THEN (random() * 2500)::int END
FROM g JOIN c ON g.pr * c.total >= c.lo AND g.pr * c.total < c.hi
JOIN s ON g.ps >= s.lo AND g.ps < s.hi;
SQL
# Vacuumed as autovacuum leaves a table at rest (the visibility map the balance's index-only
# scan relies on), not as the bulk insert just left it.
psql "$DB" -qc "VACUUM ANALYZE instruction.dossier"
RK_N=$(psql "$DB" -Atc "SELECT count(*) FROM instruction.dossier WHERE wave = 'bench-2025'")
read -r RK_RPS RK_P99 RK_BAD <<<"$(WRK_CONNS=16 wrk_run rankings -s "$HERE/rankings.lua" "$INS" -- bench-2025 "$IKEY")"
echo "GET /v1/rankings?wave&phase=1&region (random region, $RK_N dossiers, 16 connections): $RK_RPS req/s, p99 ${RK_P99} ms ($(dist rankings)), non-2xx $RK_BAD"

# ---- 3. a bulk decision of 500 dossiers and its write-back ----
# 500 more dossiers of the wave await the committee's decision; each came from DS (numbers in
# the fake's second démarche, which nothing polls, so the mutations' echo stays out of the way),
# where it is en_instruction. All 500 become phase-1 laureates in one request: 500
# dossierAccepter to send at DS's 400 a minute.
WB_FIRST=9900001
psql "$DB" -q -c "INSERT INTO instruction.dossier (id, region, wave, title, source_state,
        snapshot, last_event_id, state, group_id, ds_number, score1, spread1)
    SELECT gen_random_uuid(), '84', 'bench-2025', 'PTCE decided ' || n, 'deposited',
           jsonb_build_object('title', 'PTCE decided ' || n, 'carrier',
                              jsonb_build_object('siret', '73282932000074', 'name', 'Bench')),
           gen_random_uuid(), 'awaiting_decision', 'region-84', $WB_FIRST + n - 1, 5000, 100
    FROM generate_series(1, 500) n"
"$VENV_PY" -c '
import json, sys
first = int(sys.argv[1])
print(json.dumps([{"number": n, "state": "en_instruction", "demarche": {"number": 23456}}
                  for n in range(first, first + 500)]))' "$WB_FIRST" >"$RESULTS/ds_dossiers.json"
curl -fsS -o /dev/null -H 'Content-Type: application/json' -d @"$RESULTS/ds_dossiers.json" \
    "$DSFAKE_URL/_control/dossiers"
psql "$DB" -Atc "SELECT json_build_object('phase', 1, 'decisions', json_agg(json_build_object(
        'dossier_id', id, 'outcome', 'phase1_laureate', 'reference', 'CNA-bench/' || ds_number)))
    FROM instruction.dossier WHERE ds_number >= $WB_FIRST" >"$RESULTS/decisions.json"
settle
read -r BD_CODE BD_SECS <<<"$(curl -sS -o "$RESULTS/decisions_answer.json" -w '%{http_code} %{time_total}' \
    -H "Authorization: Bearer $IKEY" -H 'Content-Type: application/json' \
    -d @"$RESULTS/decisions.json" "$INS/v1/waves/bench-2025/decisions")"
BD_AT=$(date +%s.%N)
BD_MS=$(awk -v s="$BD_SECS" 'BEGIN {printf "%.0f", s * 1000}')
echo "POST /v1/waves/{wave}/decisions (500 dossiers): HTTP $BD_CODE in ${BD_MS} ms"
read -r WB_N WB_OK WB_SPAN WB_TOTAL WB_WIN WB_RATE WB_429 <<<"$("$VENV_PY" "$HERE/writeback_drain.py" \
    "$DSFAKE_URL" "$WB_FIRST" 500 "$DRAIN_SECS" "$BD_AT")"
echo "DS write-back: $WB_N of 500 mutations received ($WB_OK accepted) within ${DRAIN_SECS} s, the last ${WB_TOTAL} s after the decision; ${WB_RATE}/min between the first and the last, at most $WB_WIN in any 60 s, $WB_429 answered 429"

echo "== figures of the issues, instruction (same run)"
echo "deposit → visible in instruction at ${VI_RATE}/s held (paced at $DEPOSIT_RATE/s, submission answered $VI_201 of $((DEPOSIT_RATE * SECS))): p50 ${VI_P50} ms, p99 ${VI_P99} ms (target <= 50 at 1000/s), $VI_CPU"
echo "GET /v1/rankings with a region filter, $RK_N dossiers, 16 connections: p99 ${RK_P99} ms (target <= 20), $RK_RPS req/s, $(ratio "$RK_RPS" "$PG_SELECT16") of pgbench point select at 16 clients"
echo "bulk decision of 500: ${BD_MS} ms, HTTP $BD_CODE (target <= 1000, 200)"
echo "its DS write-back: $WB_N of 500 drained in ${WB_SPAN} s at ${WB_RATE}/min, at most $WB_WIN in any 60 s window, $WB_429 × 429 (target <= 400 a minute, never above)"
