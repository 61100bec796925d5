-- Enrolments' Idempotency-Keys move to common/'s idempotency_request
-- (common/sql/003_idempotency.sql), the store every creating POST of funding now uses, and the
-- columns that kept them on the enrolment go. A key used before keeps replaying its enrolment:
-- its request_hash is the same SHA-256 of the body, its answer the enrolment as it is now (what
-- a replay answered until this migration).
INSERT INTO idempotency_request (key_id, key, request_hash, response_status, response_body,
                                 created_at)
SELECT partner_key_id, idem_key, request_hash, 201,
       json_build_object('id', id, 'action_id', action_id, 'dossier_id', dossier_id,
                         'state', state, 'note', note, 'delivered_on', delivered_on,
                         'delivery_note', delivery_note, 'version', version,
                         'created_at', to_char(created_at AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))::text,
       created_at
FROM support_enrolment ON CONFLICT DO NOTHING;
ALTER TABLE support_enrolment DROP COLUMN idem_key, DROP COLUMN request_hash;
