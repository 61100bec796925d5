-- Waves are submission's: instruction and funding learn their parameters from wave.published
-- events (POST /v1/waves appends one with the row). The waves that exist before this event
-- type (the seed wave of 001_init.sql, and any created since) are published once here, with
-- the envelope common/cloudevent.c writes.
INSERT INTO outbox (event_id, topic, key, type, payload)
SELECT e.id, 'ptce.submission.events', w.id, 'wave.published',
       json_build_object(
           'specversion', '1.0', 'id', e.id, 'source', '/ptce/submission',
           'type', 'wave.published', 'subject', w.id,
           'time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'datacontenttype', 'application/json',
           'data', json_build_object('wave', json_build_object(
               'id', w.id, 'label', w.label, 'deposit_opens_at', w.deposit_opens_at,
               'deposit_closes_at', w.deposit_closes_at, 'phase2_opens_at', w.phase2_opens_at,
               'phase2_closes_at', w.phase2_closes_at, 'phase2_slots', w.phase2_slots,
               'amount_per_laureate_cents', w.amount_per_laureate_cents,
               'rules_version', w.rules_version)))::text
FROM wave w CROSS JOIN LATERAL (SELECT gen_random_uuid() AS id) e
ORDER BY w.deposit_opens_at;
