-- The State's signatures and the payments of tranches applied in batches, set-based (make bench:
-- signatures and payments at 64 connections ran at 0.03 x pgbench's insert rate; in batches of
-- the same per-operation functions, 0.05). Every operation wrote its rows one statement at a
-- time, and each ledger row queued two deferred row triggers that updated, at commit, the
-- same two hot rows (the wave's national envelope and its money_stats row) once per operation.
-- money_batch(ops) applies a whole batch in a few statements over all its operations, and the
-- balances move once per statement and per envelope or money_stats row.

-- 1. The balances move once per ledger INSERT statement, summed per envelope and per money_stats
-- row (transition tables), instead of once per ledger row at commit. Rows are updated in key
-- order, envelopes before money_stats, so two statements never wait for each other in a cycle.
-- An envelope that cannot hold what the statement commits fails it with SQLSTATE 23505 (409 for
-- the services, as before) and the constraint name envelope_room, which money_batch recognises.
DROP TRIGGER ledger_to_envelope ON ledger;
DROP TRIGGER ledger_to_money_stats ON ledger;
DROP FUNCTION ledger_to_envelope();
DROP FUNCTION ledger_to_money_stats();

CREATE FUNCTION ledger_balances() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    d record;
BEGIN
    FOR d IN SELECT l.envelope_id,
                    sum(CASE l.kind WHEN 'commitment' THEN l.amount_cents
                                    WHEN 'payment' THEN 0 ELSE -l.amount_cents END) AS dc,
                    sum(CASE l.kind WHEN 'payment' THEN l.amount_cents
                                    WHEN 'recovery' THEN -l.amount_cents ELSE 0 END) AS dp
               FROM moved l GROUP BY l.envelope_id ORDER BY l.envelope_id LOOP
        UPDATE envelope SET committed_cents = committed_cents + d.dc, paid_cents = paid_cents + d.dp
         WHERE id = d.envelope_id AND committed_cents + d.dc <= amount_cents;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'envelope % cannot hold % more cents', d.envelope_id, d.dc
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'envelope_room';
        END IF;
    END LOOP;
    FOR d IN SELECT a.wave, coalesce(a.region, 'none') AS region,
                    sum(CASE l.kind WHEN 'commitment' THEN l.amount_cents
                                    WHEN 'payment' THEN 0 ELSE -l.amount_cents END) AS dc,
                    sum(CASE l.kind WHEN 'payment' THEN l.amount_cents
                                    WHEN 'recovery' THEN -l.amount_cents ELSE 0 END) AS dp
               FROM moved l JOIN agreement a ON a.id = l.agreement_id
              GROUP BY 1, 2 ORDER BY 1, 2 LOOP
        UPDATE money_stats SET committed_cents = committed_cents + d.dc,
                               paid_cents = paid_cents + d.dp
         WHERE wave = d.wave AND region = d.region;
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_balances AFTER INSERT ON ledger REFERENCING NEW TABLE AS moved
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_balances();

-- 2. The sum of an agreement's tranches can only change with a tranche's amount, its agreement,
-- or its leaving or entering the cancelled state: only those updates queue the check (a tranche
-- falling due or paid no longer runs two queries at commit).
DROP TRIGGER tranche_sum ON tranche;
CREATE CONSTRAINT TRIGGER tranche_sum AFTER INSERT OR DELETE ON tranche
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tranche_sum_check();
CREATE CONSTRAINT TRIGGER tranche_sum_update AFTER UPDATE ON tranche
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.amount_cents IS DISTINCT FROM NEW.amount_cents
          OR OLD.agreement_id IS DISTINCT FROM NEW.agreement_id
          OR (OLD.state = 'cancelled') IS DISTINCT FROM (NEW.state = 'cancelled'))
    EXECUTE FUNCTION tranche_sum_check();

-- 3. money_batch. One operation of a batch, as the service sends it (jsonb), and its outcome.
--   kind 'sign': a signature (signer) of agreement id, taking it from from_state to to_state
--   (the service's state machine says which) when its version is `version` (the If-Match);
--   kind 'pay': the payment of tranche id (reference, paid_on).
--   scope: the regions the caller sees (NULL: all); an agreement outside them does not exist.
--   aid and eid are money_batch's: the agreement, and the envelope a State's signature draws on.
CREATE TYPE money_op AS (
    n integer, kind text, id uuid, aid uuid, eid uuid, version bigint, signer text, from_state text,
    to_state text, scope text[], actor text, actor_role text, request_id text, reference text,
    paid_on date);
-- status: 'ok', or a refusal: 'not_found', 'precondition_failed' (version: the current one),
-- 'transition' (state: the current one; the service names what it may become), 'conflict',
-- 'unprocessable', with detail. On 'ok': version is the agreement's new one (a signature), doc
-- the answer (the agreement, the tranche), events the effect's [{type, subject, data}].
CREATE TYPE money_outcome AS (
    n integer, status text, detail text, state text, version bigint, doc text, events jsonb);


-- The refusal of operation n: no row is written for it.
CREATE FUNCTION money_refusal(n integer, status text, detail text, state text DEFAULT NULL,
                              version bigint DEFAULT NULL) RETURNS money_outcome
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(n, status, detail, state, version, NULL, NULL)::money_outcome
$$;

-- One round: operations on distinct agreements, each judged against the locked rows, then every
-- accepted one written by one statement per table over all of them. locked: the envelopes are
-- locked before what they have left is read; otherwise it is read as the last commit left it,
-- and the ledger's trigger checks it again under the envelope's lock (envelope_room).
CREATE FUNCTION money_round(ops money_op[], locked boolean) RETURNS money_outcome[]
LANGUAGE plpgsql AS $$
DECLARE
    refused money_outcome[];
    released jsonb;
    commits uuid[] := '{}';
    c record;
    envs uuid[] := '{}';
    lefts bigint[] := '{}';
    k integer;
    done money_outcome[];
BEGIN
    -- Locks: the agreements, then the tranches, each in id order, as every other path takes them.
    PERFORM 1 FROM agreement WHERE id IN (SELECT o.aid FROM unnest(ops) o) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM tranche WHERE id IN (SELECT o.id FROM unnest(ops) o WHERE o.kind = 'pay')
      ORDER BY id FOR UPDATE;

    -- The refusals the locked rows decide, in the order the single use cases check them
    -- (funding_resource_visible, fsm_apply's If-Match and transition, agreement_sign, tranche_pay).
    refused := ARRAY(
        SELECT CASE
            WHEN a.id IS NULL OR (o.scope IS NOT NULL AND (a.region IS NULL OR NOT a.region = ANY (o.scope)))
                THEN money_refusal(o.n, 'not_found', format('no %s %s',
                                   CASE o.kind WHEN 'sign' THEN 'agreement' ELSE 'tranche' END, o.id))
            WHEN o.kind = 'pay' AND t.state = 'paid'
                THEN money_refusal(o.n, 'conflict', format('tranche %s was already paid on %s (reference %s)',
                                   o.id, t.paid_on, t.reference))
            WHEN o.kind = 'pay' AND t.state <> 'due'
                THEN money_refusal(o.n, 'conflict', format('tranche %s is %s, not due: its condition (%s) is not met',
                                   o.id, t.state, t.condition))
            WHEN o.kind = 'sign' AND a.version <> o.version
                THEN money_refusal(o.n, 'precondition_failed', NULL, a.state, a.version)
            WHEN o.kind = 'sign' AND a.state <> o.from_state
                THEN money_refusal(o.n, 'transition', NULL, a.state, a.version)
            WHEN o.kind = 'sign' AND o.signer = 'state' AND a.beneficiary_siret IS NULL
                THEN money_refusal(o.n, 'unprocessable', 'the beneficiary has no SIRET: the State signs only for an identified legal person')
            WHEN o.kind = 'sign' AND o.signer = 'state' AND o.eid IS NULL
                THEN money_refusal(o.n, 'conflict', format('no envelope for wave %s: one must be opened first', a.wave))
            END
          FROM unnest(ops) o
          LEFT JOIN agreement a ON a.id = o.aid
          LEFT JOIN tranche t ON t.id = o.id AND o.kind = 'pay');
    refused := ARRAY(SELECT r FROM unnest(refused) r WHERE r.n IS NOT NULL);
    ops := ARRAY(SELECT o FROM unnest(ops) o WHERE o.n NOT IN (SELECT r.n FROM unnest(refused) r));

    -- The State's signatures commit their amount in arrival order: each fits in what its
    -- envelope has left after the earlier ones, or is refused as envelope_commit refuses it.
    IF locked THEN
        PERFORM 1 FROM envelope WHERE id IN (SELECT o.eid FROM unnest(ops) o) ORDER BY id FOR UPDATE;
    END IF;
    FOR c IN SELECT o.n, o.aid, a.amount_cents AS amount, e.id AS eid, e.wave, e.region,
                    e.amount_cents - e.committed_cents AS room
               FROM unnest(ops) o JOIN agreement a ON a.id = o.aid
               JOIN envelope e ON e.id = o.eid
              WHERE o.kind = 'sign' AND o.signer = 'state'
              ORDER BY o.n LOOP
        k := array_position(envs, c.eid);
        IF k IS NULL THEN
            envs := envs || c.eid;
            lefts := lefts || c.room;
            k := cardinality(envs);
        END IF;
        IF lefts[k] < c.amount THEN
            refused := refused || money_refusal(c.n, 'conflict',
                format('envelope %s (wave %s, region %s) has %s cents left; %s are needed',
                       c.eid, c.wave, coalesce(c.region, 'national'), lefts[k], c.amount));
        ELSE
            lefts[k] := lefts[k] - c.amount;
            commits := commits || c.aid;
        END IF;
    END LOOP;
    ops := ARRAY(SELECT o FROM unnest(ops) o WHERE o.n NOT IN (SELECT r.n FROM unnest(refused) r));

    -- Signatures: what fsm_apply writes (state, version + 1, history) and agreement_sign (the
    -- signature; for the State the commitment, the signing day and the tranches now due).
    UPDATE agreement a
       SET state = o.to_state, version = a.version + 1,
           committed_cents = a.committed_cents + CASE WHEN a.id = ANY (commits) THEN a.amount_cents ELSE 0 END,
           envelope_id = CASE WHEN a.id = ANY (commits) THEN o.eid ELSE a.envelope_id END,
           signed_on = CASE WHEN a.id = ANY (commits) THEN current_date ELSE a.signed_on END,
           updated_at = CASE WHEN a.id = ANY (commits) THEN now() ELSE a.updated_at END
      FROM unnest(ops) o WHERE o.kind = 'sign' AND a.id = o.aid;
    INSERT INTO agreement_history (resource_id, from_state, to_state, actor, actor_role, motivation,
                                   request_id, at)
    SELECT o.aid::text, o.from_state, o.to_state, o.actor, o.actor_role, NULL, o.request_id, now()
      FROM unnest(ops) o WHERE o.kind = 'sign' ORDER BY o.n;
    INSERT INTO signature (agreement_id, signer, actor)
    SELECT o.aid, o.signer, o.actor FROM unnest(ops) o WHERE o.kind = 'sign' ORDER BY o.n;
    WITH r AS (
        UPDATE tranche t SET state = 'due'
         WHERE t.agreement_id = ANY (commits) AND t.condition = 'signature' AND t.state = 'scheduled'
        RETURNING t.*)
    SELECT jsonb_object_agg(x.aid, x.events) INTO released
      FROM (SELECT r.agreement_id AS aid,
                   jsonb_agg(event('funding.tranche_due', r.agreement_id,
                       jsonb_build_object('tranche_id', r.id, 'agreement_id', r.agreement_id,
                                          'dossier_id', a.dossier_id, 'rank', r.rank,
                                          'amount_cents', r.amount_cents, 'due_on', r.due_on))
                       ORDER BY r.rank) AS events
              FROM r JOIN agreement a ON a.id = r.agreement_id GROUP BY r.agreement_id) x;

    -- Payments: the tranche paid, then what ledger_post, agreement_move and agreement_maybe_close
    -- do to its agreement (paid_cents, signed → active, active → closed, each move a version and
    -- a history row).
    UPDATE tranche t SET state = 'paid', paid_on = o.paid_on, reference = o.reference
      FROM unnest(ops) o WHERE o.kind = 'pay' AND t.id = o.id;
    WITH p AS (
        SELECT o.n, o.aid, t.amount_cents AS amount, a.envelope_id, a.state AS was,
               CASE WHEN a.state = 'signed' THEN 'active' ELSE a.state END AS mid
          FROM unnest(ops) o JOIN tranche t ON t.id = o.id JOIN agreement a ON a.id = o.aid
         WHERE o.kind = 'pay'),
    m AS (
        SELECT p.*, CASE WHEN p.mid = 'active'
                          AND NOT EXISTS (SELECT 1 FROM tranche x WHERE x.agreement_id = p.aid
                                            AND x.state IN ('scheduled', 'due'))
                          AND NOT EXISTS (SELECT 1 FROM report r WHERE r.agreement_id = p.aid
                                            AND r.state <> 'approved')
                          AND EXISTS (SELECT 1 FROM year3_decision y WHERE y.agreement_id = p.aid)
                         THEN 'closed' ELSE p.mid END AS final
          FROM p),
    up AS (
        UPDATE agreement a
           SET paid_cents = a.paid_cents + CASE WHEN m.envelope_id IS NULL THEN 0 ELSE m.amount END,
               state = m.final,
               version = a.version + (m.was <> m.mid)::integer + (m.mid <> m.final)::integer,
               updated_at = CASE WHEN (m.envelope_id IS NOT NULL AND m.amount > 0) OR m.was <> m.final
                                 THEN now() ELSE a.updated_at END
          FROM m WHERE a.id = m.aid)
    INSERT INTO agreement_history (resource_id, from_state, to_state, actor, at)
    SELECT m.aid::text, s.from_state, s.to_state, 'system', now()
      FROM m CROSS JOIN LATERAL (VALUES (1, m.was, m.mid), (2, m.mid, m.final)) s (step, from_state, to_state)
     WHERE s.from_state <> s.to_state
     ORDER BY m.n, s.step;

    -- The answers and the events, from the rows as they now are (the ledger does not change them).
    done := ARRAY(
        SELECT ROW(o.n, 'ok', NULL, a.state, a.version, agreement_doc(a.id)::text,
                   coalesce(released -> o.aid::text, '[]'))::money_outcome
          FROM unnest(ops) o JOIN agreement a ON a.id = o.aid WHERE o.kind = 'sign'
        UNION ALL
        SELECT ROW(o.n, 'ok', NULL, a.state, a.version, tranche_doc(t)::text,
                   jsonb_build_array(event('funding.tranche_paid', a.id,
                       jsonb_build_object('tranche_id', t.id, 'agreement_id', a.id,
                           'dossier_id', a.dossier_id, 'amount_cents', t.amount_cents,
                           'paid_on', o.paid_on, 'reference', o.reference))))::money_outcome
          FROM unnest(ops) o JOIN tranche t ON t.id = o.id JOIN agreement a ON a.id = o.aid
         WHERE o.kind = 'pay');
    -- The money, in one ledger statement: its trigger moves each envelope and money_stats row once,
    -- the envelope's lock taken as late as it can be, and held until the commit.
    INSERT INTO ledger (kind, envelope_id, agreement_id, tranche_id, amount_cents, reference, actor)
    SELECT l.kind, l.envelope_id, l.agreement_id, l.tranche_id, l.amount_cents, l.reference, l.actor
      FROM (SELECT o.n, 'commitment' AS kind, a.envelope_id, a.id AS agreement_id, NULL::uuid AS tranche_id,
                   a.amount_cents, NULL AS reference, o.actor
              FROM unnest(ops) o JOIN agreement a ON a.id = o.aid
             WHERE o.kind = 'sign' AND a.id = ANY (commits) AND a.amount_cents > 0
            UNION ALL
            SELECT o.n, 'payment', a.envelope_id, a.id, t.id, t.amount_cents, o.reference, o.actor
              FROM unnest(ops) o JOIN tranche t ON t.id = o.id JOIN agreement a ON a.id = o.aid
             WHERE o.kind = 'pay' AND a.envelope_id IS NOT NULL AND t.amount_cents > 0) l
     ORDER BY l.n;

    RETURN refused || done;
END $$;

-- The operations in successive rounds: an operation goes in the round after the one of the
-- operation before it on the same agreement (most batches are one round).
CREATE FUNCTION money_rounds(ops money_op[], rounds integer, locked boolean) RETURNS money_outcome[]
LANGUAGE plpgsql AS $$
DECLARE
    out money_outcome[] := '{}';
BEGIN
    IF rounds <= 1 THEN
        RETURN money_round(ops, locked);
    END IF;
    FOR r IN 1..rounds LOOP
        out := out || money_round(ARRAY(
            SELECT x.o FROM (SELECT o, CASE WHEN o.aid IS NULL THEN 1
                                            ELSE row_number() OVER (PARTITION BY o.aid ORDER BY o.n) END AS round
                               FROM unnest(ops) o) x
             WHERE x.round = r), locked);
    END LOOP;
    RETURN out;
END $$;

-- A batch of operations (a jsonb array of money_op's members but aid), in arrival order: one
-- outcome each, as if each had run alone in that order. Operations on one agreement go in
-- successive rounds, so that each sees the one before. When the ledger's trigger finds an
-- envelope unable to hold the batch's commitments (another transaction committed on it since
-- it was read), the batch is run again from the start with its envelopes locked first.
CREATE FUNCTION money_batch(batch jsonb) RETURNS SETOF money_outcome LANGUAGE plpgsql AS $$
DECLARE
    ops money_op[];
    out money_outcome[];
    rounds integer;
    which text;
BEGIN
    -- The envelope is looked up once per wave and region of the batch: its table holds the hot
    -- rows' many recent versions, which every look-up walks.
    ops := ARRAY(
        WITH x AS (
            SELECT x.*, a.wave, a.region, t.agreement_id
              FROM jsonb_to_recordset(batch) AS x (n integer, kind text, id uuid, version bigint,
                    signer text, from_state text, to_state text, scope text[], actor text,
                    actor_role text, request_id text, reference text, paid_on date)
              LEFT JOIN agreement a ON x.kind = 'sign' AND x.signer = 'state' AND a.id = x.id
              LEFT JOIN tranche t ON x.kind = 'pay' AND t.id = x.id),
        e AS (
            SELECT w.wave, w.region, envelope_for(w.wave, w.region) AS eid
              FROM (SELECT DISTINCT x.wave, x.region FROM x WHERE x.wave IS NOT NULL) w)
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
