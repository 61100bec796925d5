-- Transactional outbox and inbox, created in every service's own schema (search_path).

-- Events waiting to be published. A row is written in the same transaction as the state change
-- it describes, and marked sent only after the broker acknowledged it.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    event_id    uuid NOT NULL UNIQUE,
    topic       text NOT NULL,
    key         text NOT NULL,
    type        text NOT NULL,
    payload     text NOT NULL,          -- the CloudEvents envelope, byte for byte as published
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;

-- Wake the relay at commit time; NOTIFY folds duplicates within one transaction.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Events consumed. The primary key makes a second delivery of the same event a no-op; seq
-- records the order in which effects were applied.
CREATE TABLE inbox (
    event_id    uuid PRIMARY KEY,
    seq         bigserial UNIQUE,
    topic       text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    key         text,
    type        text NOT NULL,
    source      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Messages that can never be applied (not a CloudEvent, or refused by the handler), kept for a
-- human to look at instead of blocking the partition.
CREATE TABLE inbox_dead_letter (
    topic       text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    reason      text NOT NULL,
    payload     text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
