-- Decisions written back to démarches-simplifiées (DS): a queue filled in the decision's own
-- transaction (writeback_enqueue) and drained by the write-back worker (writeback.c), oldest
-- first and in order per dossier. A row is 'sent' only once DS accepted the mutation (or the
-- dossier was found already in the state it asked for); 'dead' is a refusal DS will never
-- lift (a permission error, a dossier in another state), kept with DS's message for a human.
CREATE TABLE ds_writeback (
    id               bigserial PRIMARY KEY,
    dossier_id       uuid NOT NULL,                 -- instruction's dossier
    ds_number        bigint NOT NULL CHECK (ds_number > 0),
    mutation         text NOT NULL CHECK (mutation IN ('dossierPasserEnInstruction',
                         'dossierAccepter', 'dossierRefuser', 'dossierClasserSansSuite',
                         'dossierRepasserEnConstruction')),
    motivation       text,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    -- DS requires a motivation to refuse or to close without follow-up.
    CONSTRAINT ds_writeback_motivation CHECK (
        mutation NOT IN ('dossierRefuser', 'dossierClasserSansSuite')
        OR coalesce(motivation, '') <> '')
);
-- The worker's scan of due commands and its per-dossier order check; the gauges' counts.
CREATE INDEX ds_writeback_due ON ds_writeback (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX ds_writeback_dossier ON ds_writeback (ds_number, id) WHERE status = 'pending';
CREATE INDEX ds_writeback_dead ON ds_writeback (id) WHERE status = 'dead';
CREATE INDEX ds_writeback_by_dossier ON ds_writeback (dossier_id, id);
