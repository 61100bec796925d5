-- Domain refusals of well-formed bodies answer 422, as the API's others do (a reduction beyond
-- the unpaid cents, the State's signature without a SIRET), and never 400, which says the
-- request itself is malformed. The contract fuzzing found both cases below: a valid body that
-- the request's schema accepts, answered 400.

-- A report handed in names entries of the catalogue, in the list of its own kind: a code or a
-- heading outside the catalogue (data, GET /v1/reports/catalogue, so no schema can list it)
-- is 422, and so is a progress report's body given to a financial report or the other way
-- round, which was accepted and stored as if it were the report's content.
CREATE OR REPLACE FUNCTION report_submit(rid uuid, body jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r report;
    list text;
    bad text;
BEGIN
    PERFORM 1 FROM agreement WHERE id = (SELECT agreement_id FROM report WHERE id = rid) FOR UPDATE;
    SELECT * INTO r FROM report WHERE id = rid FOR UPDATE;
    IF r.id IS NULL THEN
        RETURN fail('not_found', format('no report %s', rid));
    ELSIF r.state NOT IN ('expected', 'rejected') THEN
        RETURN fail('conflict', format('report %s is %s', rid, r.state));
    END IF;
    list := CASE r.kind WHEN 'progress' THEN 'indicators' ELSE 'lines' END;
    IF jsonb_typeof(body->list) IS DISTINCT FROM 'array' THEN
        RETURN fail('unprocessable', format('report %s is a %s report: its body lists %s',
                    rid, r.kind, list));
    END IF;
    IF r.kind = 'progress' THEN
        SELECT e->>'code' INTO bad FROM jsonb_array_elements(body->'indicators') e
         WHERE NOT EXISTS (SELECT 1 FROM indicator i WHERE i.code = e->>'code') LIMIT 1;
    ELSE
        SELECT e->>'heading' INTO bad FROM jsonb_array_elements(body->'lines') e
         WHERE NOT EXISTS (SELECT 1 FROM cerfa_heading h WHERE h.code = e->>'heading') LIMIT 1;
    END IF;
    IF bad IS NOT NULL THEN
        RETURN fail('unprocessable', format('%s %s is not in the catalogue (GET /v1/reports/catalogue)',
                    CASE r.kind WHEN 'progress' THEN 'the indicator' ELSE 'the CERFA heading' END,
                    to_jsonb(bad)));
    END IF;
    UPDATE report SET state = 'submitted', content = body, submitted_at = now(), reason = NULL,
           version = version + 1 WHERE id = rid;
    RETURN jsonb_build_object('report', (SELECT report_doc(x) FROM report x WHERE x.id = rid),
                              'events', '[]'::jsonb);
END $$;

-- The year-3 aid: what the envelope has left is checked before the agreement's amount grows,
-- so that a grant the envelope cannot hold (the schema allows any int64 amount) is the 409 it
-- is, not a bigint overflow answered 400 as a malformed request. The envelopes are capped at
-- 999999999999999 cents (011_envelope_cap.sql), so no sum below overflows once it fits.
CREATE OR REPLACE FUNCTION year3_decide(aid uuid, decision text, amount bigint, motivation text,
                                        actor text)
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
        refusal := envelope_commit(a.envelope_id, aid, amount, tid, actor);
        IF refusal IS NOT NULL THEN
            RETURN refusal;
        END IF;
        UPDATE agreement SET amount_cents = amount_cents + amount, duration_months = greatest(duration_months, 36)
         WHERE id = aid;
        evs := tranches_release(aid, 'year3_decision');
    END IF;
    PERFORM agreement_amend(aid, 'year3', motivation, actor);
    PERFORM agreement_maybe_close(aid);
    RETURN jsonb_build_object('events', jsonb_build_array(event('funding.year3_decided', aid,
        jsonb_build_object('agreement_id', aid, 'dossier_id', a.dossier_id, 'decision', decision,
                           'amount_cents', amount, 'motivation', motivation))) || evs);
END $$;
