-- Instruction's own model: waves, routing, the lifecycle, regional work, experts, scoring.

-- Waves as submission publishes them (wave.published), with instruction's own parameters.
CREATE TABLE wave (
    id                 text PRIMARY KEY,
    label              text NOT NULL DEFAULT '',
    phase2_slots       integer NOT NULL DEFAULT 0 CHECK (phase2_slots >= 0),
    target_delay_days  integer NOT NULL DEFAULT 42 CHECK (target_delay_days > 0),
    doc                jsonb NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- The instruction groups: one per INSEE region and a default one.
CREATE TABLE instruction_group (
    id     text PRIMARY KEY,
    label  text NOT NULL
);
INSERT INTO instruction_group (id, label)
SELECT 'region-' || r, 'Instruction régionale ' || r
FROM unnest(ARRAY['01','02','03','04','06','11','24','27','28','32','44','52','53','75','76',
                  '84','93','94']) AS r;
INSERT INTO instruction_group (id, label) VALUES ('default', 'Cellule nationale (par défaut)');

-- Routing rules as data: the first rule (lowest priority number) matching the region wins;
-- a dossier that no rule matches goes to the 'default' group.
CREATE TABLE routing_rule (
    id        bigserial PRIMARY KEY,
    priority  integer NOT NULL DEFAULT 100,
    region    text NOT NULL,
    group_id  text NOT NULL REFERENCES instruction_group (id)
);
INSERT INTO routing_rule (region, group_id)
SELECT substr(id, 8), id FROM instruction_group WHERE id LIKE 'region-%';

ALTER TABLE dossier
    ADD COLUMN state           text NOT NULL DEFAULT 'received',
    ADD COLUMN version         bigint NOT NULL DEFAULT 1,
    ADD COLUMN doc_version     bigint NOT NULL DEFAULT 0,
    ADD COLUMN stale_events    integer NOT NULL DEFAULT 0,
    ADD COLUMN content_hash    text,
    ADD COLUMN correction_hash text,
    ADD COLUMN group_id        text REFERENCES instruction_group (id),
    ADD COLUMN ds_number       bigint,
    ADD COLUMN withdrawn       boolean NOT NULL DEFAULT false,
    ADD COLUMN deposited_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN decided_at      timestamptz,
    ADD COLUMN phase2_deadline timestamptz,
    ADD COLUMN opinion         text CHECK (opinion IN ('favourable', 'reserved', 'unfavourable')),
    ADD COLUMN opinion_motivation text,
    ADD COLUMN labels          text[] NOT NULL DEFAULT '{}',
    ADD COLUMN score1          integer,
    ADD COLUMN spread1         integer,
    ADD COLUMN score2          integer,
    ADD COLUMN spread2         integer;
-- The national ranking reads a wave's dossiers by score, optionally for one region.
CREATE INDEX dossier_rank ON dossier (wave, region, score1 DESC NULLS LAST, id);
CREATE INDEX dossier_rank2 ON dossier (wave, region, score2 DESC NULLS LAST, id);
CREATE INDEX dossier_queue ON dossier (group_id, state) WHERE NOT withdrawn;

-- Every transition (fsm_apply's columns).
CREATE TABLE dossier_history (
    seq          bigserial PRIMARY KEY,
    resource_id  uuid NOT NULL,
    from_state   text NOT NULL,
    to_state     text NOT NULL,
    actor        text NOT NULL,
    actor_role   text,
    motivation   text,
    request_id   text,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dossier_history_resource ON dossier_history (resource_id, seq);

-- Every (re-)assignment of a dossier to a group, with who and why.
CREATE TABLE assignment (
    seq         bigserial PRIMARY KEY,
    dossier_id  uuid NOT NULL,
    group_id    text NOT NULL REFERENCES instruction_group (id),
    actor       text NOT NULL,
    reason      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assignment_dossier ON assignment (dossier_id, seq);

-- Private annotations: a catalogue per wave ('*' for every wave without its own).
CREATE TABLE annotation_def (
    wave       text NOT NULL,
    key        text NOT NULL,
    type       text NOT NULL CHECK (type IN ('text', 'boolean', 'integer', 'date')),
    mandatory  boolean NOT NULL DEFAULT false,
    label      text NOT NULL,
    PRIMARY KEY (wave, key)
);
INSERT INTO annotation_def (wave, key, type, mandatory, label) VALUES
    ('*', 'territorial_anchoring', 'text', true, 'Ancrage territorial'),
    ('*', 'partners_met', 'boolean', false, 'Partenaires rencontrés'),
    ('*', 'jobs_expected', 'integer', false, 'Emplois attendus'),
    ('*', 'visit_date', 'date', false, 'Date de visite');

CREATE TABLE annotation (
    dossier_id  uuid NOT NULL,
    key         text NOT NULL,
    value       jsonb NOT NULL,
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dossier_id, key)
);

-- Scoring grids: weighted criteria with maximum scores, versioned per wave and phase.
CREATE TABLE grid (
    wave      text NOT NULL,
    phase     integer NOT NULL CHECK (phase IN (1, 2)),
    version   integer NOT NULL,
    criteria  jsonb NOT NULL,
    PRIMARY KEY (wave, phase, version)
);
INSERT INTO grid (wave, phase, version, criteria) VALUES
    ('*', 1, 1, '[{"key": "cooperation", "weight": 3, "max": 5},
                 {"key": "territory", "weight": 2, "max": 5},
                 {"key": "economic_model", "weight": 2, "max": 5},
                 {"key": "governance", "weight": 1, "max": 5}]'),
    ('*', 2, 1, '[{"key": "maturity", "weight": 3, "max": 10},
                 {"key": "budget", "weight": 2, "max": 10},
                 {"key": "impact", "weight": 3, "max": 10}]');

-- One reviewer's scores; total is in hundredths of a percent of the grid's maximum (0..10000).
CREATE TABLE review (
    id            uuid PRIMARY KEY,
    dossier_id    uuid NOT NULL,
    phase         integer NOT NULL,
    reviewer      text NOT NULL,
    grid_wave     text NOT NULL,
    grid_version  integer NOT NULL,
    scores        jsonb NOT NULL,
    total         integer NOT NULL CHECK (total BETWEEN 0 AND 10000),
    comment       text,
    at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dossier_id, phase, reviewer)
);

-- Opinions asked of experts.
CREATE TABLE opinion_request (
    id            uuid PRIMARY KEY,
    dossier_id    uuid NOT NULL,
    expert_name   text NOT NULL,
    expert_siret  text,
    question      text NOT NULL,
    yes_no        boolean NOT NULL DEFAULT false,
    confidential  boolean NOT NULL DEFAULT false,
    deadline      timestamptz NOT NULL,
    key_id        text NOT NULL UNIQUE,
    state         text NOT NULL DEFAULT 'requested'
                  CHECK (state IN ('requested', 'declared', 'blocked', 'answered', 'revoked')),
    declaration   jsonb,
    answer        text,
    answer_yes    boolean,
    reminders     integer NOT NULL DEFAULT 0,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    answered_at   timestamptz
);
CREATE INDEX opinion_request_dossier ON opinion_request (dossier_id, created_at);
