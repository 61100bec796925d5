-- money_batch looked an envelope up once per wave and region of the batch: a batch of a wave's
-- signatures holds a dozen regions, each falling back on the same national envelope (make
-- bench, pg_stat_statements: 6.8 calls of envelope_for per batch of 18.7 operations, 0.4 ms
-- each, walking the hot row's recent versions: a sixth of the batch). The same function, the
-- envelopes read once per wave.

CREATE OR REPLACE FUNCTION money_batch(batch jsonb) RETURNS SETOF money_outcome LANGUAGE plpgsql AS $$
DECLARE
    ops money_op[];
    out money_outcome[];
    rounds integer;
    which text;
BEGIN
    -- The envelopes are read once per wave of the batch, then each region of the batch takes its
    -- own or the national one, as envelope_for does: the table holds the hot rows' many recent
    -- versions, which every read walks.
    ops := ARRAY(
        WITH x AS (
            SELECT x.*, a.wave, a.region, t.agreement_id
              FROM jsonb_to_recordset(batch) AS x (n integer, kind text, id uuid, version bigint,
                    signer text, from_state text, to_state text, scope text[], actor text,
                    actor_role text, request_id text, reference text, paid_on date)
              LEFT JOIN agreement a ON x.kind = 'sign' AND x.signer = 'state' AND a.id = x.id
              LEFT JOIN tranche t ON x.kind = 'pay' AND t.id = x.id),
        v AS MATERIALIZED (
            SELECT v.id, v.wave, v.region FROM envelope v
             WHERE v.wave IN (SELECT DISTINCT x.wave FROM x WHERE x.wave IS NOT NULL)),
        e AS (
            SELECT DISTINCT ON (w.wave, w.region) w.wave, w.region, v.id AS eid
              FROM (SELECT DISTINCT x.wave, x.region FROM x WHERE x.wave IS NOT NULL) w
              LEFT JOIN v ON v.wave = w.wave AND (v.region = w.region OR v.region IS NULL)
             ORDER BY w.wave, w.region, v.region NULLS LAST)
        SELECT ROW(x.n, x.kind, x.id, CASE x.kind WHEN 'sign' THEN x.id ELSE x.agreement_id END,
                   e.eid, x.version, x.signer, x.from_state, x.to_state, x.scope, x.actor,
                   x.actor_role, x.request_id, x.reference, x.paid_on)::money_op
          FROM x LEFT JOIN e ON e.wave = x.wave AND e.region IS NOT DISTINCT FROM x.region);
    SELECT coalesce(max(c), 0) INTO rounds
      FROM (SELECT count(*) AS c FROM unnest(ops) o WHERE o.aid IS NOT NULL GROUP BY o.aid) x;
    BEGIN
        out := money_rounds(ops, rounds, false);
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS which = CONSTRAINT_NAME;
        IF which IS DISTINCT FROM 'envelope_room' THEN
            RAISE;
        END IF;
        out := money_rounds(ops, rounds, true);
    END;
    RETURN QUERY SELECT * FROM unnest(out) ORDER BY 1;
END $$;
