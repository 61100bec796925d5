-- Submission: waves, dossiers and their checks, DS notifications and sync state.

-- Waves (millésimes) are data: the permanent AMI has an open-ended deposit window.
CREATE TABLE wave (
    id                      text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,32}$'),
    label                   text NOT NULL,
    deposit_opens_at        timestamptz NOT NULL,
    deposit_closes_at       timestamptz,           -- NULL: open-ended
    phase2_opens_at         timestamptz,
    phase2_closes_at        timestamptz,
    phase2_slots            integer NOT NULL CHECK (phase2_slots BETWEEN 0 AND 1000),
    amount_per_laureate_cents bigint NOT NULL CHECK (amount_per_laureate_cents >= 0),
    rules_version           text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (deposit_closes_at IS NULL OR deposit_closes_at > deposit_opens_at)
);
INSERT INTO wave (id, label, deposit_opens_at, phase2_slots, amount_per_laureate_cents,
                  rules_version)
VALUES ('2026', 'PTCE émergents 2026', '2026-01-01T00:00:00Z', 20, 10000000,
        'decret-2015-431/v1');

CREATE SEQUENCE dossier_change_seq;

CREATE TABLE dossier (
    id              uuid PRIMARY KEY,
    origin          text NOT NULL CHECK (origin IN ('ds', 'partner')),
    ds_number       bigint UNIQUE,
    ds_procedure_id bigint,
    ds_updated_at   timestamptz,           -- DS's dateDerniereModification of what we hold
    partner_key_id  text,                  -- the API key that deposited it (partners)
    wave_id         text NOT NULL REFERENCES wave (id),
    state           text NOT NULL,
    region          text,
    eligibility     text NOT NULL CHECK (eligibility IN ('eligible', 'ineligible', 'needs_review')),
    version         integer NOT NULL DEFAULT 1,
    -- The API representation, served byte for byte: json (not jsonb) keeps the text as written,
    -- so a read costs no re-serialisation.
    document        json NOT NULL,
    change_seq      bigint NOT NULL DEFAULT nextval('dossier_change_seq'),
    deposited_at    timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    withdrawn_at    timestamptz
);
CREATE UNIQUE INDEX dossier_change ON dossier (change_seq);
CREATE INDEX dossier_region_change ON dossier (region, change_seq);

-- Every evaluation of the rules, rule by rule, append-only.
CREATE TABLE dossier_check (
    dossier_id      uuid NOT NULL REFERENCES dossier (id),
    version         integer NOT NULL,
    rules_version   text NOT NULL,
    rule            text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('pass', 'fail', 'needs_review')),
    evidence        jsonb NOT NULL,
    checked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dossier_id, version, rule)
);

-- Append-only history of what happened to a dossier and why.
CREATE TABLE dossier_history (
    id          bigserial PRIMARY KEY,
    dossier_id  uuid NOT NULL REFERENCES dossier (id),
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX dossier_history_dossier ON dossier_history (dossier_id, id);

-- Attachments downloaded from DS, verified against their checksum.
CREATE TABLE attachment (
    dossier_id      uuid NOT NULL REFERENCES dossier (id),
    role            text NOT NULL,          -- 'main_document'
    filename        text NOT NULL,
    content_type    text,
    byte_size       bigint NOT NULL,
    checksum        text NOT NULL,          -- base64 MD5, as DS gives it
    pages           integer,
    content         bytea NOT NULL,
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dossier_id, role)
);

-- Webhook notifications: stored at once, processed by the fetch worker, never dropped.
CREATE TABLE ds_notification (
    id              bigserial PRIMARY KEY,
    procedure_id    bigint NOT NULL,
    dossier_number  bigint NOT NULL,
    state           text NOT NULL,
    updated_at_raw  text NOT NULL,
    updated_at      timestamptz NOT NULL,
    origin          text NOT NULL DEFAULT 'webhook' CHECK (origin IN ('webhook', 'poller')),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    UNIQUE (procedure_id, dossier_number, state, updated_at_raw)
);
CREATE INDEX ds_notification_pending ON ds_notification (next_attempt_at, id)
    WHERE status = 'pending';

-- No NOTIFY trigger here on purpose: a notifying commit holds a database-wide lock until it
-- ends, which would serialise webhook intake (no group commit). The handler wakes the local
-- workers directly, and workers of other replicas find new rows by polling.

-- The reconciliation poller's watermarks, per démarche.
CREATE TABLE ds_sync (
    demarche_number     bigint PRIMARY KEY,
    updated_watermark   timestamptz,
    deleted_watermark   timestamptz,
    last_run_at         timestamptz
);

-- Idempotency keys of creating POSTs: same key and same body replay the first answer.
CREATE TABLE idempotency_key (
    key_id          text NOT NULL,
    key             text NOT NULL,
    request_hash    text NOT NULL,
    response_status integer,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, key)
);
