# bench_funding.sh — sourced by bench.sh (its variables, its helpers, the stack's env): the
# funding figures. Money moving (the State's signatures commit an agreement's amount on its
# envelope; payments of due tranches), then the money statistics of 10 waves.
#
# The agreements are seeded by SQL (funding_seed.sql: the service's own agreement_create,
# agreement_sign and tranche_pay functions, so the ledger and the balances stay consistent),
# not through dossier.phase2_decided events: tens of thousands through Kafka and the inbox would
# take minutes the bench does not measure. PTCE_BENCH_FUNDING_IDS sets how many signatures plus
# payments are prepared (default 5000 a second of load, warm-up included, since batches serve a
# few thousand a second): too few and the end of the run is 409s, which funding_money.lua reports.

FUND=$PTCE_URL_FUNDING
FUND_IDS=${PTCE_BENCH_FUNDING_IDS:-$((5000 * (SECS + 3)))}
fund_sql() { psql "$DB" -X -qAt -v ON_ERROR_STOP=1 -c "SET search_path TO funding" -c "$1"; }
fund_seed() { # WAVE N CARRIER_SIGNED STATE_SIGNED PAID AGE_DAYS ENVELOPES
    psql "$DB" -X -q -v wave="$1" -v n="$2" -v carrier="$3" -v signed="$4" -v paid="$5" \
        -v age_days="$6" -v envelopes="$7" -f "$HERE/funding_seed.sql" >/dev/null
}

echo "== funding (wrk, ${CONNS} connections for the money, 16 for the statistics, ${SECS}s each)"
FKEY=$(PTCE_ADMIN_DATABASE_URL=$DB "$BUILD/ptce-admin" key create --role funding_officer --regions all --label bench-funding)
DKEY=$(PTCE_ADMIN_DATABASE_URL=$DB "$BUILD/ptce-admin" key create --role dashboard --regions all --label bench-dashboard)

# Committing and paying: half the ids are carrier-signed agreements waiting for the State's
# signature, half the due first tranches of agreements the State signed, shuffled together.
MONEY_WAVE=bench-money
HALF=$((FUND_IDS / 2))
fund_seed "$MONEY_WAVE" $((2 * HALF)) $((2 * HALF)) "$HALF" 0 1 "${PTCE_BENCH_FUNDING_ENVELOPES:-national}"
# The seed signs its agreements in one transaction: the wave's envelope and money_stats rows,
# updated once per signature, come out of it with tens of thousands of dead versions (and as
# many index entries), which every UPDATE of the measured load walked until autovacuum came by.
# Whether it came before the load was luck: on a workbench, 0.148 ms a money_stats UPDATE and
# 2 469 req/s with autovacuum kept off those two tables, 0.012 ms and 3 351 req/s once it had
# run. A service's own batches leave one version per commit, which pruning removes as it goes:
# the load starts from the tables as autovacuum leaves them.
psql "$DB" -qc "VACUUM (ANALYZE) funding.envelope, funding.money_stats, funding.agreement, funding.tranche, funding.ledger"
fund_sql "SELECT line FROM (
              SELECT 'sign ' || id FROM agreement WHERE wave = '$MONEY_WAVE' AND state = 'carrier_signed'
              UNION ALL
              SELECT 'pay ' || t.id FROM tranche t JOIN agreement a ON a.id = t.agreement_id
               WHERE a.wave = '$MONEY_WAVE' AND t.state = 'due') AS ids (line)
          ORDER BY random()" >"$RESULTS/money_ids.txt"
rm -f "$RESULTS/money_ids.next"
# pgbench's insert again, just before the money load: the machine's speed drifts over a run of
# several minutes (a host neighbour: once 10 725 tps at the start against 22 000-25 000 in other
# runs, 4 % stolen, which made the ratio 0.40), and one figure taken minutes earlier can say
# more about that drift than about the service. Both ratios are printed; the issue's figure is
# the lower one (against the faster pgbench), so that neither drift flatters it.
IFS='|' read -r PG_INSERT2 PG_INSERT2_CPU <<<"$(pgbench_insert pg_insert_funding)"
echo "pgbench single-row insert, just before the money load: $PG_INSERT2 tps ($PG_INSERT2_CPU)"
statements_reset
read -r MO_RPS MO_P99 MO_BAD <<<"$(wrk_run money -s "$HERE/funding_money.lua" "$FUND" -- \
    "$RESULTS/money_ids.txt" "$RESULTS/money_ids.next" "$FKEY" 2)"
MO_CPU=$(<"$RESULTS/money.cpu")
statements_top "signatures and payments"
MO_SIGNED=$(fund_sql "SELECT count(*) FROM agreement WHERE wave = '$MONEY_WAVE' AND state <> 'carrier_signed'")
MO_PAID=$(fund_sql "SELECT count(*) FROM tranche t JOIN agreement a ON a.id = t.agreement_id
                     WHERE a.wave = '$MONEY_WAVE' AND t.state = 'paid'")
echo "POST signatures (state) + payments, mixed: $MO_RPS req/s, p99 ${MO_P99} ms ($(dist money)), non-2xx $MO_BAD;" \
    "$((MO_SIGNED - HALF)) commitments and $MO_PAID payments made, of $FUND_IDS prepared; $MO_CPU"

# The invariants, over every wave: each line counts what breaks one (ledger_check() compares
# the ledger with the envelopes' and agreements' balances, and those with money_stats).
MO_CHECK=$(fund_sql "SELECT
    (SELECT count(*) FROM envelope WHERE committed_cents > amount_cents OR paid_cents > committed_cents)
  + (SELECT count(*) FROM envelope e WHERE e.committed_cents <>
        (SELECT coalesce(sum(a.committed_cents), 0) FROM agreement a WHERE a.envelope_id = e.id))
  + jsonb_array_length(ledger_check())
  + (SELECT count(*) FROM agreement a WHERE a.amount_cents <>
        (SELECT coalesce(sum(t.amount_cents), 0) FROM tranche t
          WHERE t.agreement_id = a.id AND t.state <> 'cancelled'))")
if [ "$MO_CHECK" = 0 ]; then MO_INV=PASS; else MO_INV="FAIL ($MO_CHECK problems)"; fi
echo "envelope invariant after the run (no over-commitment, ledger = balances, tranches = amounts): $MO_INV"

# Statistics: 10 waves of 1 000 agreements, at every stage (draft, carrier-signed, signed with
# a due tranche, some of them late, paid), with regional envelopes.
STATS_WAVES=()
for w in $(seq -w 1 10); do
    STATS_WAVES+=("bench-stats-$w")
    fund_seed "bench-stats-$w" 1000 900 700 400 400 regional
done
psql "$DB" -X -qc "ANALYZE funding.agreement, funding.tranche, funding.envelope" >/dev/null
read -r ST_RPS ST_P99 ST_BAD <<<"$(WRK_CONNS=16 wrk_run stats -s "$HERE/stats_money.lua" "$FUND" -- "$DKEY" "${STATS_WAVES[@]}")"
echo "GET /v1/stats/money?wave= (10 waves x 1000 agreements), 16 connections: $ST_RPS req/s, p99 ${ST_P99} ms ($(dist stats)), non-2xx $ST_BAD"

echo "== figures of the issues (same run, funding)"
PG_INSERT_HI=$(awk -v a="$PG_INSERT" -v b="$PG_INSERT2" 'BEGIN {print (a > b ? a : b)}')
echo "committing and paying, $CONNS connections / pgbench insert: $(ratio "$MO_RPS" "$PG_INSERT_HI") (target >= 0.50; $MO_RPS req/s against the faster of the run's two pgbench inserts: $(ratio "$MO_RPS" "$PG_INSERT") of the first, $PG_INSERT tps, $(ratio "$MO_RPS" "$PG_INSERT2") of the one just before, $PG_INSERT2 tps), p99 ${MO_P99} ms, non-2xx $MO_BAD, invariant $MO_INV, $MO_CPU (pgbench insert just before: $PG_INSERT2_CPU)"
echo "GET /v1/stats/money, 16 connections: p99 ${ST_P99} ms (target <= 10), $ST_RPS req/s, non-2xx $ST_BAD"
