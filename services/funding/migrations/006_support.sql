-- The bouquet of services (support actions, access of phase-1 laureates, enrolments and
-- deliveries) and the PTCE charter's signatures. Tables are prefixed support_ and charter_.

-- The catalogue: one row per action a partner organisation delivers. `enrolled` is the count of
-- enrolments, kept under the row lock that every enrolment takes, so it never passes capacity.
CREATE TABLE support_action (
    id                   uuid PRIMARY KEY,
    seq                  bigserial UNIQUE,
    title                text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description          text CHECK (length(description) <= 2000),
    partner_organisation text NOT NULL CHECK (length(partner_organisation) BETWEEN 1 AND 200),
    partner_key_id       text CHECK (partner_key_id ~ '^[0-9a-f]{16}$'),
    format               text NOT NULL CHECK (format IN ('individual', 'collective')),
    capacity             integer NOT NULL CHECK (capacity BETWEEN 1 AND 100000),
    enrolled             integer NOT NULL DEFAULT 0,
    starts_on            date NOT NULL,
    ends_on              date NOT NULL,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_on >= starts_on),
    CHECK (enrolled BETWEEN 0 AND capacity)
);

-- Access to the bouquet: one row per phase-1 laureate, written once from dossier.decided and
-- never removed by a later phase-2 refusal.
CREATE TABLE support_access (
    dossier_id         uuid PRIMARY KEY,
    seq                bigserial UNIQUE,
    wave               text NOT NULL,
    region             text,
    ptce_name          text,
    beneficiary_siret  text,
    beneficiary_name   text,
    decision_reference text NOT NULL,
    decided_at         timestamptz NOT NULL,
    event_id           uuid NOT NULL,
    granted_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX support_access_region ON support_access (region, seq);

-- A PTCE enrolled in an action by the partner key that delivers it. The Idempotency-Key of the
-- creating POST is kept on the row: the same key and body replay the first answer.
CREATE TABLE support_enrolment (
    id             uuid PRIMARY KEY,
    action_id      uuid NOT NULL REFERENCES support_action (id),
    dossier_id     uuid NOT NULL REFERENCES support_access (dossier_id),
    partner_key_id text NOT NULL,
    idem_key       text NOT NULL,
    request_hash   text NOT NULL,
    state          text NOT NULL DEFAULT 'enrolled' CHECK (state IN ('enrolled', 'delivered')),
    note           text CHECK (length(note) <= 2000),
    delivered_on   date,
    delivery_note  text CHECK (length(delivery_note) <= 2000),
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_key_id, idem_key),
    UNIQUE (action_id, dossier_id),
    CHECK ((state = 'delivered') = (delivered_on IS NOT NULL))
);

-- Signatures of the PTCE charter: public data (organisation, SIRET, role, version, date).
CREATE TABLE charter_signature (
    id              uuid PRIMARY KEY,
    seq             bigserial UNIQUE,
    organisation    text NOT NULL CHECK (length(organisation) BETWEEN 1 AND 200),
    siret           text NOT NULL CHECK (siret ~ '^[0-9]{14}$'),
    role            text NOT NULL CHECK (role IN ('carrier', 'contributor')),
    charter_version text NOT NULL CHECK (charter_version ~ '^[A-Za-z0-9._-]{1,32}$'),
    signed_on       date NOT NULL,
    recorded_by     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (siret, charter_version)
);
