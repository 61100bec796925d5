-- Idempotency keys now live in common/'s idempotency_request (common/sql/003_idempotency.sql),
-- the same table in every service's schema. The keys already used here move there.
INSERT INTO idempotency_request (key_id, key, request_hash, response_status, response_body,
                                 created_at)
SELECT key_id, key, request_hash, response_status, response_body, created_at
FROM idempotency_key ON CONFLICT DO NOTHING;
DROP TABLE idempotency_key;
