-- Funding's use cases as functions: each runs inside the caller's transaction and answers one
-- jsonb document, {"error": "<status>", "detail": "…"} for a refusal (the caller then rolls back,
-- so a refusal never leaves a half-written change) or the result with "events": [{type,
-- subject, data}] that the caller appends to the outbox before it commits. Locks are always
-- taken in the same order — agreement, then tranche, then envelope — so two operations never
-- wait for each other in a cycle.

CREATE FUNCTION fail(code text, detail text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('error', code, 'detail', detail)
$$;

CREATE FUNCTION event(type text, subject uuid, data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('type', type, 'subject', subject::text, 'data', data)
$$;

CREATE FUNCTION envelope_doc(e envelope) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', e.id, 'wave', e.wave, 'region', e.region,
        'amount_cents', e.amount_cents, 'committed_cents', e.committed_cents,
        'paid_cents', e.paid_cents, 'remaining_cents', e.amount_cents - e.committed_cents,
        'created_at', e.created_at)
$$;

CREATE FUNCTION tranche_doc(t tranche) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', t.id, 'agreement_id', t.agreement_id, 'rank', t.rank,
        'label', t.label, 'condition', t.condition, 'amount_cents', t.amount_cents,
        'state', t.state, 'due_on', t.due_on, 'paid_on', t.paid_on, 'reference', t.reference,
        'recovered_cents', t.recovered_cents)
$$;

CREATE FUNCTION agreement_doc(aid uuid) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', a.id, 'dossier_id', a.dossier_id, 'wave', a.wave,
        'region', a.region, 'ptce_name', a.ptce_name,
        'beneficiary', jsonb_build_object('siret', a.beneficiary_siret, 'name', a.beneficiary_name),
        'decision_reference', a.decision_reference, 'amount_cents', a.amount_cents,
        'committed_cents', a.committed_cents, 'paid_cents', a.paid_cents,
        'recovered_cents', a.recovered_cents, 'state', a.state, 'version', a.version,
        'starts_on', a.starts_on,
        'ends_on', (a.starts_on + make_interval(months => a.duration_months))::date - 1,
        'duration_months', a.duration_months, 'signed_on', a.signed_on,
        'envelope_id', a.envelope_id, 'clauses', a.clauses,
        'signatures', coalesce((SELECT jsonb_agg(jsonb_build_object('signer', s.signer,
                                    'signed_at', s.signed_at) ORDER BY s.signed_at, s.signer)
                                FROM signature s WHERE s.agreement_id = a.id), '[]'),
        'tranches', coalesce((SELECT jsonb_agg(tranche_doc(t) ORDER BY t.rank)
                              FROM tranche t WHERE t.agreement_id = a.id), '[]'),
        'year3', (SELECT jsonb_build_object('decision', y.decision, 'amount_cents', y.amount_cents,
                         'motivation', y.motivation, 'decided_at', y.decided_at)
                  FROM year3_decision y WHERE y.agreement_id = a.id),
        'created_at', a.created_at, 'updated_at', a.updated_at)
      FROM agreement a WHERE a.id = aid
$$;

CREATE FUNCTION report_doc(r report) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('id', r.id, 'agreement_id', r.agreement_id, 'year', r.year,
        'kind', r.kind, 'due_on', r.due_on, 'state', r.state, 'content', r.content,
        'reason', r.reason, 'submitted_at', r.submitted_at, 'reviewed_at', r.reviewed_at,
        'overdue', r.state IN ('expected', 'rejected') AND r.due_on < current_date)
$$;

-- A new version row (an amendment) and version + 1 of the agreement.
CREATE FUNCTION agreement_amend(aid uuid, kind text, motivation text, actor text) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    UPDATE agreement SET version = version + 1, updated_at = now() WHERE id = aid;
    INSERT INTO agreement_version (agreement_id, number, kind, amount_cents, motivation, snapshot, actor)
    SELECT aid, coalesce(max(v.number), 0) + 1, kind, a.amount_cents, motivation,
           agreement_doc(aid), actor
      FROM agreement a LEFT JOIN agreement_version v ON v.agreement_id = a.id
     WHERE a.id = aid GROUP BY a.amount_cents;
END $$;

-- A state change the service makes itself (active on the first payment, closed at the end).
CREATE FUNCTION agreement_move(aid uuid, from_state text, to_state text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE agreement SET state = to_state, version = version + 1, updated_at = now()
     WHERE id = aid AND state = from_state;
    IF FOUND THEN
        INSERT INTO agreement_history (resource_id, from_state, to_state, actor, at)
        VALUES (aid::text, from_state, to_state, 'system', now());
    END IF;
END $$;

-- Closes an active agreement once nothing is left to do: no tranche waits, every report is
-- approved and the year-3 aid is decided.
CREATE FUNCTION agreement_maybe_close(aid uuid) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tranche WHERE agreement_id = aid AND state IN ('scheduled', 'due'))
       AND NOT EXISTS (SELECT 1 FROM report WHERE agreement_id = aid AND state <> 'approved')
       AND EXISTS (SELECT 1 FROM year3_decision WHERE agreement_id = aid) THEN
        PERFORM agreement_move(aid, 'active', 'closed');
    END IF;
END $$;

-- Scheduled tranches of a committed agreement whose condition is now met become due.
CREATE FUNCTION tranches_release(aid uuid, cond text) RETURNS jsonb LANGUAGE sql AS $$
    WITH released AS (
        UPDATE tranche t SET state = 'due'
          FROM agreement a
         WHERE t.agreement_id = aid AND a.id = aid AND a.envelope_id IS NOT NULL
           AND t.condition = cond AND t.state = 'scheduled'
        RETURNING t.*, a.dossier_id)
    SELECT coalesce(jsonb_agg(event('funding.tranche_due', r.agreement_id,
               jsonb_build_object('tranche_id', r.id, 'agreement_id', r.agreement_id,
                                  'dossier_id', r.dossier_id, 'rank', r.rank,
                                  'amount_cents', r.amount_cents, 'due_on', r.due_on))
               ORDER BY r.rank), '[]')
      FROM released r
$$;

-- The agreement of a phase-2 laureate, from what the service computed (clauses, schedule).
CREATE FUNCTION agreement_create(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    aid uuid;
    starts date := (p->>'decided_at')::timestamptz::date;
    years integer := ((p->>'duration_months')::integer + 11) / 12;
BEGIN
    INSERT INTO agreement (dossier_id, wave, region, beneficiary_siret, beneficiary_name,
                           ptce_name, decision_reference, decided_at, starts_on,
                           duration_months, amount_cents, clauses)
    VALUES ((p->>'dossier_id')::uuid, p->>'wave', p->>'region', p#>>'{beneficiary,siret}',
            p#>>'{beneficiary,name}', p->>'ptce_name', p->>'reference',
            (p->>'decided_at')::timestamptz, starts, (p->>'duration_months')::integer,
            (p->>'amount_cents')::bigint, p->'clauses')
    ON CONFLICT (dossier_id) DO NOTHING
    RETURNING id INTO aid;
    IF aid IS NULL THEN
        RETURN jsonb_build_object('duplicate', true, 'events', '[]'::jsonb);
    END IF;
    INSERT INTO tranche (agreement_id, rank, label, condition, amount_cents, due_on)
    SELECT aid, n, e->>'label', e->>'condition', (e->>'amount_cents')::bigint,
           (starts + make_interval(months => (e->>'due_offset_months')::integer))::date
      FROM jsonb_array_elements(p->'tranches') WITH ORDINALITY AS s(e, n);
    INSERT INTO report (agreement_id, year, kind, due_on)
    SELECT aid, y, k, (starts + make_interval(months => 12 * y + 6))::date
      FROM generate_series(1, years) AS y, unnest(ARRAY['progress', 'financial']) AS k;
    INSERT INTO agreement_version (agreement_id, number, kind, amount_cents, snapshot, actor)
    VALUES (aid, 1, 'initial', (p->>'amount_cents')::bigint, agreement_doc(aid), 'system');
    RETURN jsonb_build_object('id', aid, 'events', jsonb_build_array(
        event('funding.agreement_created', aid, jsonb_build_object('agreement', agreement_doc(aid)))));
END $$;

-- The envelope an agreement draws on: its region's for the wave, else the wave's national one.
CREATE FUNCTION envelope_for(w text, r text) RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT id FROM envelope WHERE wave = w AND (region = r OR region IS NULL)
     ORDER BY region NULLS LAST LIMIT 1
$$;

-- Reserves amount on an envelope, under its row lock; NULL when it fits, else the refusal.
CREATE FUNCTION envelope_commit(eid uuid, aid uuid, amount bigint, tid uuid, actor text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    e envelope;
BEGIN
    SELECT * INTO e FROM envelope WHERE id = eid FOR UPDATE;
    IF e.amount_cents - e.committed_cents < amount THEN
        RETURN fail('conflict', format('envelope %s (wave %s, region %s) has %s cents left; %s are needed',
                    e.id, e.wave, coalesce(e.region, 'national'), e.amount_cents - e.committed_cents, amount));
    END IF;
    UPDATE envelope SET committed_cents = committed_cents + amount WHERE id = eid;
    UPDATE agreement SET committed_cents = committed_cents + amount, envelope_id = eid WHERE id = aid;
    IF amount > 0 THEN -- an agreement reduced to nothing is committed, and journals nothing
        INSERT INTO ledger (kind, envelope_id, agreement_id, tranche_id, amount_cents, actor)
        VALUES ('commitment', eid, aid, tid, amount, actor);
    END IF;
    RETURN NULL;
END $$;

-- A signature, after the state machine moved the agreement; the State's commits the money.
CREATE FUNCTION agreement_sign(aid uuid, signer text, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    a agreement;
    eid uuid;
    refusal jsonb;
BEGIN
    SELECT * INTO a FROM agreement WHERE id = aid FOR UPDATE;
    INSERT INTO signature (agreement_id, signer, actor) VALUES (aid, signer, actor);
    IF signer <> 'state' THEN
        RETURN jsonb_build_object('events', '[]'::jsonb);
    ELSIF a.beneficiary_siret IS NULL THEN
        RETURN fail('unprocessable', 'the beneficiary has no SIRET: the State signs only for an identified legal person');
    END IF;
    eid := envelope_for(a.wave, a.region);
    IF eid IS NULL THEN
        RETURN fail('conflict', format('no envelope for wave %s: one must be opened first', a.wave));
    END IF;
    refusal := envelope_commit(eid, aid, a.amount_cents, NULL, actor);
    IF refusal IS NOT NULL THEN
        RETURN refusal;
    END IF;
    UPDATE agreement SET signed_on = current_date, updated_at = now() WHERE id = aid;
    RETURN jsonb_build_object('events', tranches_release(aid, 'signature'));
END $$;

-- Moves money on the envelope and the agreement, and journals it.
CREATE FUNCTION ledger_post(kind text, aid uuid, tid uuid, amount bigint, ref text, actor text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    eid uuid := (SELECT envelope_id FROM agreement WHERE id = aid);
    dc bigint := CASE kind WHEN 'commitment' THEN amount WHEN 'payment' THEN 0 ELSE -amount END;
    dp bigint := CASE kind WHEN 'payment' THEN amount WHEN 'recovery' THEN -amount ELSE 0 END;
BEGIN
    IF eid IS NULL OR amount = 0 THEN
        RETURN; -- nothing committed yet: no money moved
    END IF;
    PERFORM 1 FROM envelope WHERE id = eid FOR UPDATE;
    UPDATE envelope SET committed_cents = committed_cents + dc, paid_cents = paid_cents + dp WHERE id = eid;
    UPDATE agreement SET committed_cents = committed_cents + dc, paid_cents = paid_cents + dp,
           recovered_cents = recovered_cents + CASE kind WHEN 'recovery' THEN amount ELSE 0 END,
           updated_at = now()
     WHERE id = aid;
    INSERT INTO ledger (kind, envelope_id, agreement_id, tranche_id, amount_cents, reference, actor)
    VALUES (kind, eid, aid, tid, amount, ref, actor);
END $$;

-- Locks a tranche's agreement, then the tranche; NULL when there is no such tranche.
CREATE FUNCTION tranche_lock(tid uuid) RETURNS tranche LANGUAGE plpgsql AS $$
DECLARE
    t tranche;
BEGIN
    PERFORM 1 FROM agreement WHERE id = (SELECT agreement_id FROM tranche WHERE id = tid) FOR UPDATE;
    SELECT * INTO t FROM tranche WHERE id = tid FOR UPDATE;
    RETURN t;
END $$;

CREATE FUNCTION tranche_pay(tid uuid, ref text, paid date, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t tranche := tranche_lock(tid);
BEGIN
    IF t.id IS NULL THEN
        RETURN fail('not_found', format('no tranche %s', tid));
    ELSIF t.state = 'paid' THEN
        RETURN fail('conflict', format('tranche %s was already paid on %s (reference %s)', tid, t.paid_on, t.reference));
    ELSIF t.state <> 'due' THEN
        RETURN fail('conflict', format('tranche %s is %s, not due: its condition (%s) is not met', tid, t.state, t.condition));
    END IF;
    UPDATE tranche SET state = 'paid', paid_on = paid, reference = ref WHERE id = tid;
    PERFORM ledger_post('payment', t.agreement_id, tid, t.amount_cents, ref, actor);
    PERFORM agreement_move(t.agreement_id, 'signed', 'active');
    PERFORM agreement_maybe_close(t.agreement_id);
    RETURN jsonb_build_object('tranche', (SELECT tranche_doc(x) FROM tranche x WHERE x.id = tid),
        'events', jsonb_build_array(event('funding.tranche_paid', t.agreement_id,
            jsonb_build_object('tranche_id', tid, 'agreement_id', t.agreement_id,
                'dossier_id', (SELECT dossier_id FROM agreement WHERE id = t.agreement_id),
                'amount_cents', t.amount_cents, 'paid_on', paid, 'reference', ref))));
END $$;

CREATE FUNCTION tranche_cancel(tid uuid, motivation text, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t tranche := tranche_lock(tid);
BEGIN
    IF t.id IS NULL THEN
        RETURN fail('not_found', format('no tranche %s', tid));
    ELSIF t.state NOT IN ('scheduled', 'due') THEN
        RETURN fail('conflict', format('tranche %s is %s: only a scheduled or due tranche is cancelled', tid, t.state));
    END IF;
    UPDATE tranche SET state = 'cancelled' WHERE id = tid;
    UPDATE agreement SET amount_cents = amount_cents - t.amount_cents WHERE id = t.agreement_id;
    PERFORM ledger_post('reduction', t.agreement_id, tid, t.amount_cents, NULL, actor);
    PERFORM agreement_amend(t.agreement_id, 'cancellation', motivation, actor);
    PERFORM agreement_maybe_close(t.agreement_id);
    RETURN jsonb_build_object('tranche', (SELECT tranche_doc(x) FROM tranche x WHERE x.id = tid),
                              'events', '[]'::jsonb);
END $$;

-- A partial reduction: the unpaid tranches give up cents from the last one backwards.
CREATE FUNCTION agreement_reduce(aid uuid, amount bigint, motivation text, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    unpaid bigint;
    left_over bigint := amount;
    t tranche;
    take bigint;
BEGIN
    SELECT coalesce(sum(amount_cents), 0) INTO unpaid FROM tranche
     WHERE agreement_id = aid AND state IN ('scheduled', 'due');
    IF amount > unpaid THEN
        RETURN fail('unprocessable', format('only %s cents are not yet paid; %s cannot be reduced', unpaid, amount));
    END IF;
    FOR t IN SELECT * FROM tranche WHERE agreement_id = aid AND state IN ('scheduled', 'due')
              ORDER BY rank DESC FOR UPDATE LOOP
        EXIT WHEN left_over = 0;
        take := least(left_over, t.amount_cents);
        UPDATE tranche SET amount_cents = amount_cents - take,
               state = CASE WHEN amount_cents = take THEN 'cancelled' ELSE state END
         WHERE id = t.id;
        left_over := left_over - take;
    END LOOP;
    UPDATE agreement SET amount_cents = amount_cents - amount WHERE id = aid;
    PERFORM ledger_post('reduction', aid, NULL, amount, NULL, actor);
    PERFORM agreement_amend(aid, 'reduction', motivation, actor);
    PERFORM agreement_maybe_close(aid);
    RETURN jsonb_build_object('events', '[]'::jsonb);
END $$;

-- Unspent money paid back (ordre de reversement) on a paid tranche.
CREATE FUNCTION tranche_recover(tid uuid, amount bigint, ref text, actor text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t tranche := tranche_lock(tid);
BEGIN
    IF t.id IS NULL THEN
        RETURN fail('not_found', format('no tranche %s', tid));
    ELSIF t.state <> 'paid' THEN
        RETURN fail('conflict', format('tranche %s is %s: only paid money is recovered', tid, t.state));
    ELSIF amount > t.amount_cents - t.recovered_cents THEN
        RETURN fail('unprocessable', format('at most %s cents of tranche %s may be recovered',
                    t.amount_cents - t.recovered_cents, tid));
    END IF;
    UPDATE tranche SET recovered_cents = recovered_cents + amount WHERE id = tid;
    PERFORM ledger_post('recovery', t.agreement_id, tid, amount, ref, actor);
    RETURN jsonb_build_object('tranche', (SELECT tranche_doc(x) FROM tranche x WHERE x.id = tid),
                              'events', '[]'::jsonb);
END $$;

-- A report handed in (progress: indicators of the catalogue; financial: CERFA 15059 headings).
CREATE FUNCTION report_submit(rid uuid, body jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r report;
    bad text;
BEGIN
    PERFORM 1 FROM agreement WHERE id = (SELECT agreement_id FROM report WHERE id = rid) FOR UPDATE;
    SELECT * INTO r FROM report WHERE id = rid FOR UPDATE;
    IF r.id IS NULL THEN
        RETURN fail('not_found', format('no report %s', rid));
    ELSIF r.state NOT IN ('expected', 'rejected') THEN
        RETURN fail('conflict', format('report %s is %s', rid, r.state));
    END IF;
    IF r.kind = 'progress' THEN
        SELECT e->>'code' INTO bad FROM jsonb_array_elements(body->'indicators') e
         WHERE NOT EXISTS (SELECT 1 FROM indicator i WHERE i.code = e->>'code') LIMIT 1;
    ELSE
        SELECT e->>'heading' INTO bad FROM jsonb_array_elements(body->'lines') e
         WHERE NOT EXISTS (SELECT 1 FROM cerfa_heading h WHERE h.code = e->>'heading') LIMIT 1;
    END IF;
    IF bad IS NOT NULL OR EXISTS (SELECT 1 FROM jsonb_array_elements(
            coalesce(body->'indicators', body->'lines')) e
         WHERE e->>'code' IS NULL AND e->>'heading' IS NULL) THEN
        RETURN fail('invalid', format('%s is not in the catalogue', coalesce(bad, '(none)')));
    END IF;
    UPDATE report SET state = 'submitted', content = body, submitted_at = now(), reason = NULL,
           version = version + 1 WHERE id = rid;
    RETURN jsonb_build_object('report', (SELECT report_doc(x) FROM report x WHERE x.id = rid),
                              'events', '[]'::jsonb);
END $$;

CREATE FUNCTION report_review(rid uuid, decision text, why text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r report;
    evs jsonb := '[]';
BEGIN
    PERFORM 1 FROM agreement WHERE id = (SELECT agreement_id FROM report WHERE id = rid) FOR UPDATE;
    SELECT * INTO r FROM report WHERE id = rid FOR UPDATE;
    IF r.id IS NULL THEN
        RETURN fail('not_found', format('no report %s', rid));
    ELSIF r.state <> 'submitted' THEN
        RETURN fail('conflict', format('report %s is %s: only a submitted report is reviewed', rid, r.state));
    END IF;
    UPDATE report SET state = decision, reason = why, reviewed_at = now(), version = version + 1
     WHERE id = rid;
    IF decision = 'approved' AND NOT EXISTS (SELECT 1 FROM report WHERE agreement_id = r.agreement_id
                                             AND year = r.year AND state <> 'approved') THEN
        IF r.year IN (1, 2) THEN
            evs := tranches_release(r.agreement_id, format('year%s_reports_approved', r.year));
        END IF;
        PERFORM agreement_maybe_close(r.agreement_id);
    END IF;
    RETURN jsonb_build_object('report', (SELECT report_doc(x) FROM report x WHERE x.id = rid),
                              'events', evs);
END $$;

-- The year-3 aid, after the year-2 review: an amendment within what the envelope has left.
CREATE FUNCTION year3_decide(aid uuid, decision text, amount bigint, motivation text, actor text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    a agreement;
    tid uuid;
    refusal jsonb;
    evs jsonb := '[]';
BEGIN
    SELECT * INTO a FROM agreement WHERE id = aid FOR UPDATE;
    IF a.id IS NULL THEN
        RETURN fail('not_found', format('no agreement %s', aid));
    ELSIF a.state NOT IN ('signed', 'active') THEN
        RETURN fail('conflict', format('agreement %s is %s: the year-3 aid follows the State''s signature', aid, a.state));
    ELSIF EXISTS (SELECT 1 FROM year3_decision WHERE agreement_id = aid) THEN
        RETURN fail('conflict', format('the year-3 aid of agreement %s is already decided', aid));
    ELSIF EXISTS (SELECT 1 FROM report WHERE agreement_id = aid AND year = 2 AND state <> 'approved') THEN
        RETURN fail('conflict', 'the year-3 aid is decided after the year-2 reports are approved');
    END IF;
    INSERT INTO year3_decision (agreement_id, decision, amount_cents, motivation, actor)
    VALUES (aid, decision, amount, motivation, actor);
    IF decision = 'granted' THEN
        INSERT INTO tranche (agreement_id, rank, label, condition, amount_cents, state, due_on)
        SELECT aid, max(rank) + 1, 'Aide de troisième année', 'year3_decision', amount, 'scheduled',
               current_date
          FROM tranche WHERE agreement_id = aid
        RETURNING id INTO tid;
        UPDATE agreement SET amount_cents = amount_cents + amount, duration_months = greatest(duration_months, 36)
         WHERE id = aid;
        refusal := envelope_commit(a.envelope_id, aid, amount, tid, actor);
        IF refusal IS NOT NULL THEN
            RETURN refusal;
        END IF;
        evs := tranches_release(aid, 'year3_decision');
    END IF;
    PERFORM agreement_amend(aid, 'year3', motivation, actor);
    PERFORM agreement_maybe_close(aid);
    RETURN jsonb_build_object('events', jsonb_build_array(event('funding.year3_decided', aid,
        jsonb_build_object('agreement_id', aid, 'dossier_id', a.dossier_id, 'decision', decision,
                           'amount_cents', amount, 'motivation', motivation))) || evs);
END $$;

-- Every disagreement between the ledger and the stored balances; [] when they all agree.
CREATE FUNCTION ledger_check() RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH l AS (
        SELECT envelope_id, agreement_id,
               sum(CASE kind WHEN 'commitment' THEN amount_cents WHEN 'payment' THEN 0 ELSE -amount_cents END) AS committed,
               sum(CASE kind WHEN 'payment' THEN amount_cents WHEN 'recovery' THEN -amount_cents ELSE 0 END) AS paid
          FROM ledger GROUP BY GROUPING SETS ((envelope_id), (agreement_id))),
    problems AS (
        SELECT format('envelope %s: stored %s/%s, ledger %s/%s', e.id, e.committed_cents,
                      e.paid_cents, coalesce(l.committed, 0), coalesce(l.paid, 0)) AS p
          FROM envelope e LEFT JOIN l ON l.envelope_id = e.id AND l.agreement_id IS NULL
         WHERE e.committed_cents <> coalesce(l.committed, 0) OR e.paid_cents <> coalesce(l.paid, 0)
        UNION ALL
        SELECT format('agreement %s: stored %s/%s, ledger %s/%s', a.id, a.committed_cents,
                      a.paid_cents, coalesce(l.committed, 0), coalesce(l.paid, 0))
          FROM agreement a LEFT JOIN l ON l.agreement_id = a.id AND l.envelope_id IS NULL
         WHERE a.committed_cents <> coalesce(l.committed, 0) OR a.paid_cents <> coalesce(l.paid, 0)
        UNION ALL
        SELECT format('agreement %s: committed %s but amount %s - recovered %s', a.id,
                      a.committed_cents, a.amount_cents, a.recovered_cents)
          FROM agreement a
         WHERE a.committed_cents <> CASE WHEN a.envelope_id IS NULL THEN 0
                                         ELSE a.amount_cents - a.recovered_cents END
        UNION ALL
        SELECT format('agreement %s: paid %s but its paid tranches hold %s', a.id, a.paid_cents, s.net)
          FROM agreement a
          JOIN (SELECT agreement_id, sum(amount_cents - recovered_cents) FILTER (WHERE state = 'paid') AS net
                  FROM tranche GROUP BY agreement_id) s ON s.agreement_id = a.id
         WHERE a.paid_cents <> coalesce(s.net, 0))
    SELECT coalesce(jsonb_agg(p), '[]') FROM problems
$$;

-- GET /v1/stats/money: a wave's money, by region of the agreements.
CREATE FUNCTION stats_money(w text) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH a AS (
        SELECT coalesce(region, 'none') AS region, count(*) AS n,
               sum(committed_cents) AS committed, sum(paid_cents) AS paid
          FROM agreement WHERE wave = w GROUP BY 1),
    t AS (
        SELECT coalesce(a.region, 'none') AS region,
               count(*) FILTER (WHERE t.state = 'due') AS due,
               count(*) FILTER (WHERE t.state = 'due' AND t.due_on < current_date) AS late
          FROM tranche t JOIN agreement a ON a.id = t.agreement_id
         WHERE a.wave = w GROUP BY 1),
    e AS (SELECT region, amount_cents, committed_cents FROM envelope WHERE wave = w),
    regions AS (SELECT region FROM a UNION SELECT region FROM e WHERE region IS NOT NULL)
    SELECT jsonb_build_object(
        'wave', w,
        'envelope_cents', (SELECT coalesce(sum(amount_cents), 0) FROM e),
        'committed_cents', (SELECT coalesce(sum(committed), 0) FROM a),
        'paid_cents', (SELECT coalesce(sum(paid), 0) FROM a),
        'remaining_cents', (SELECT coalesce(sum(amount_cents - committed_cents), 0) FROM e),
        'agreements', (SELECT coalesce(sum(n), 0) FROM a),
        'tranches_due', (SELECT coalesce(sum(due), 0) FROM t),
        'tranches_late', (SELECT coalesce(sum(late), 0) FROM t),
        'by_region', coalesce((SELECT jsonb_object_agg(r.region, jsonb_build_object(
            'envelope_cents', (SELECT e.amount_cents FROM e WHERE e.region = r.region),
            'remaining_cents', (SELECT e.amount_cents - e.committed_cents FROM e WHERE e.region = r.region),
            'committed_cents', coalesce(a.committed, 0), 'paid_cents', coalesce(a.paid, 0),
            'agreements', coalesce(a.n, 0), 'tranches_due', coalesce(t.due, 0),
            'tranches_late', coalesce(t.late, 0)))
          FROM regions r LEFT JOIN a ON a.region = r.region LEFT JOIN t ON t.region = r.region), '{}'))
$$;
