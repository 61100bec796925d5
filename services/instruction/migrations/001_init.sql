-- Instruction's view of the dossiers, built from submission's events.
CREATE TABLE dossier (
    id              uuid PRIMARY KEY,
    region          text,
    wave            text,
    title           text,
    source_state    text NOT NULL,           -- submission's state (deposited, withdrawn…)
    snapshot        jsonb NOT NULL,          -- the dossier as the last event carried it
    events_applied  integer NOT NULL DEFAULT 0,
    last_event_id   uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dossier_region ON dossier (region, id);
