-- Idempotency keys of creating POSTs, in every service's schema (common/idempotency.c): the same
-- key and the same request replay the first answer. (Submission kept its own idempotency_key
-- table before; its migration 005 moves those rows here.)
CREATE TABLE idempotency_request (
    key_id          text NOT NULL,
    key             text NOT NULL,
    request_hash    text NOT NULL,
    response_status integer,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, key)
);
