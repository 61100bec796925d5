-- Dead letters that never wedge a stream: outbox rows Kafka refuses for good, and inbox
-- events whose handler keeps failing, are set aside with their error for an operator.

-- attempts: failed deliveries since the row was written (or last replayed); last_error: the
-- librdkafka error of the last one. dead_at: set when the error was permanent (too large,
-- invalid record…); the relay skips the row and every later row of the same key until
-- `ptce-admin outbox replay` clears it or `ptce-admin outbox discard` sets discarded_at.
ALTER TABLE outbox
    ADD COLUMN attempts     integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error   text,
    ADD COLUMN dead_at      timestamptz,
    ADD COLUMN discarded_at timestamptz;
-- The relay asks, for every candidate row, whether an earlier row of its key is dead.
CREATE INDEX outbox_dead ON outbox (key, id) WHERE dead_at IS NOT NULL;

-- attempts: handler calls before the event was set aside; last_status: the status slug of the
-- last one (NULL for a message that is not a CloudEvent at all).
ALTER TABLE inbox_dead_letter
    ADD COLUMN attempts    integer NOT NULL DEFAULT 1,
    ADD COLUMN last_status text;
