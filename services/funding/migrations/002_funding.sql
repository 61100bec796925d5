-- Funding: envelopes, agreements (conventions) and their tranches, the ledger, reports, year-3 aid.
-- Money is bigint euro cents everywhere. The balances stored on envelopes and agreements are a
-- cache of the ledger, written in the same transaction as the ledger row; ledger_check() says
-- whether they still agree.

-- Funding's own copy of each wave's parameters, kept from submission's wave.published.
CREATE TABLE wave_parameters (
    wave                      text PRIMARY KEY,
    amount_per_laureate_cents bigint NOT NULL DEFAULT 10000000 CHECK (amount_per_laureate_cents > 0),
    duration_months           integer NOT NULL DEFAULT 24 CHECK (duration_months BETWEEN 12 AND 60),
    phase2_slots              integer,
    -- One element per tranche: label, weight (a share of the amount), the condition that makes
    -- it due, and its nominal date as months after the start of the agreement.
    tranche_template          jsonb NOT NULL DEFAULT
        '[{"label": "Versement à la signature", "weight": 50, "condition": "signature", "due_offset_months": 0},
          {"label": "Versement de deuxième année", "weight": 50, "condition": "year1_reports_approved", "due_offset_months": 12}]',
    updated_at                timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE envelope (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    wave            text NOT NULL,
    region          text CHECK (region ~ '^[0-9]{2}$'),  -- NULL: the national envelope
    amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
    committed_cents bigint NOT NULL DEFAULT 0,
    paid_cents      bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The last line of defence against over-commitment: the service checks first, under lock.
    CHECK (committed_cents BETWEEN 0 AND amount_cents),
    CHECK (paid_cents BETWEEN 0 AND committed_cents)
);
CREATE UNIQUE INDEX envelope_wave_region ON envelope (wave, coalesce(region, ''));

CREATE TABLE agreement (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    dossier_id         uuid NOT NULL UNIQUE,   -- one agreement per dossier: replays create none
    wave               text NOT NULL,
    region             text,
    beneficiary_siret  text,
    beneficiary_name   text,
    ptce_name          text,
    decision_reference text NOT NULL,
    decided_at         timestamptz NOT NULL,
    starts_on          date NOT NULL,
    duration_months    integer NOT NULL,
    amount_cents       bigint NOT NULL CHECK (amount_cents >= 0),
    committed_cents    bigint NOT NULL DEFAULT 0 CHECK (committed_cents >= 0),
    paid_cents         bigint NOT NULL DEFAULT 0 CHECK (paid_cents >= 0),
    recovered_cents    bigint NOT NULL DEFAULT 0 CHECK (recovered_cents >= 0),
    envelope_id        uuid REFERENCES envelope (id),
    state              text NOT NULL DEFAULT 'draft'
                       CHECK (state IN ('draft', 'carrier_signed', 'signed', 'active', 'closed')),
    version            bigint NOT NULL DEFAULT 1,
    clauses            jsonb NOT NULL,
    signed_on          date,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agreement_wave_region ON agreement (wave, region);

CREATE TABLE agreement_history (
    seq         bigserial PRIMARY KEY,
    resource_id text NOT NULL,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    actor       text NOT NULL,
    actor_role  text,
    motivation  text,
    request_id  text,
    at          timestamptz NOT NULL
);

CREATE TABLE signature (
    agreement_id uuid NOT NULL REFERENCES agreement (id),
    signer       text NOT NULL CHECK (signer IN ('carrier', 'state')),
    signed_at    timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    PRIMARY KEY (agreement_id, signer)
);

CREATE TABLE tranche (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agreement_id    uuid NOT NULL REFERENCES agreement (id),
    rank            integer NOT NULL,
    label           text NOT NULL,
    condition       text NOT NULL CHECK (condition IN ('signature', 'year1_reports_approved',
                                                       'year2_reports_approved', 'year3_decision')),
    amount_cents    bigint NOT NULL CHECK (amount_cents >= 0),
    state           text NOT NULL DEFAULT 'scheduled'
                    CHECK (state IN ('scheduled', 'due', 'paid', 'cancelled')),
    due_on          date NOT NULL,
    paid_on         date,
    reference       text,
    recovered_cents bigint NOT NULL DEFAULT 0,
    CHECK (recovered_cents BETWEEN 0 AND amount_cents),
    CHECK (recovered_cents = 0 OR state = 'paid'),
    CHECK ((state = 'paid') = (paid_on IS NOT NULL)),
    UNIQUE (agreement_id, rank)
);

-- Every version of an agreement: the initial one and each amendment (avenant), never rewritten.
CREATE TABLE agreement_version (
    agreement_id uuid NOT NULL REFERENCES agreement (id),
    number       integer NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('initial', 'reduction', 'cancellation', 'year3')),
    amount_cents bigint NOT NULL,
    motivation   text,
    snapshot     jsonb NOT NULL,
    actor        text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agreement_id, number)
);

-- The journal: every commitment, payment, reduction and recovery, append-only.
CREATE TABLE ledger (
    seq          bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('commitment', 'payment', 'reduction', 'recovery')),
    envelope_id  uuid NOT NULL REFERENCES envelope (id),
    agreement_id uuid NOT NULL REFERENCES agreement (id),
    tranche_id   uuid REFERENCES tranche (id),
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    reference    text,
    actor        text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_agreement ON ledger (agreement_id);
CREATE INDEX ledger_envelope ON ledger (envelope_id);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only' USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The invariant of loi 2000-321's "modalités de versement": an agreement's tranches (but the
-- cancelled ones) add up to its amount, checked at commit so a transaction may move cents
-- between tranches.
-- SET search_path: the trigger also fires for statements of sessions with another search_path.
CREATE FUNCTION tranche_sum_check() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    aid uuid;
    total bigint;
    amount bigint;
BEGIN
    IF TG_TABLE_NAME = 'agreement' THEN
        aid := NEW.id;
    ELSIF TG_OP = 'DELETE' THEN
        aid := OLD.agreement_id;
    ELSE
        aid := NEW.agreement_id;
    END IF;
    SELECT a.amount_cents INTO amount FROM agreement a WHERE a.id = aid;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(sum(t.amount_cents), 0) INTO total FROM tranche t
     WHERE t.agreement_id = aid AND t.state <> 'cancelled';
    IF total <> amount THEN
        RAISE EXCEPTION 'the tranches of agreement % add up to % cents, not %', aid, total, amount
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER tranche_sum AFTER INSERT OR UPDATE OR DELETE ON tranche
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tranche_sum_check();
CREATE CONSTRAINT TRIGGER agreement_tranche_sum AFTER INSERT OR UPDATE OF amount_cents ON agreement
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tranche_sum_check();

CREATE TABLE report (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agreement_id uuid NOT NULL REFERENCES agreement (id),
    year         integer NOT NULL CHECK (year BETWEEN 1 AND 5),
    kind         text NOT NULL CHECK (kind IN ('progress', 'financial')),
    due_on       date NOT NULL,
    state        text NOT NULL DEFAULT 'expected'
                 CHECK (state IN ('expected', 'submitted', 'approved', 'rejected')),
    content      jsonb,
    reason       text,
    submitted_at timestamptz,
    reviewed_at  timestamptz,
    version      bigint NOT NULL DEFAULT 1,
    UNIQUE (agreement_id, year, kind)
);

-- The indicator catalogue of progress reports (the CAP PTCE sensors), as data.
CREATE TABLE indicator (
    code       text PRIMARY KEY,
    label      text NOT NULL,
    definition text NOT NULL,
    unit       text NOT NULL
);
INSERT INTO indicator (code, label, definition, unit) VALUES
 ('members', 'Membres du pôle', 'Structures membres du PTCE au 31 décembre', 'structures'),
 ('ess_members', 'Membres de l''ESS', 'Membres relevant de l''économie sociale et solidaire (loi 2014-856, art. 1)', 'structures'),
 ('jobs_created', 'Emplois créés', 'Emplois créés ou consolidés par les projets du pôle, en équivalents temps plein', 'ETP'),
 ('projects', 'Projets coopératifs', 'Projets économiques menés en coopération par au moins deux membres', 'projets'),
 ('local_authorities', 'Collectivités partenaires', 'Collectivités territoriales associées à la gouvernance', 'collectivités'),
 ('turnover_cents', 'Chiffre d''affaires mutualisé', 'Chiffre d''affaires des activités portées en commun', 'centimes d''euro'),
 ('cofunding_cents', 'Cofinancements', 'Financements obtenus hors aide de l''État', 'centimes d''euro');

-- The headings of the compte rendu financier (CERFA 15059), charges and products.
CREATE TABLE cerfa_heading (
    code  text PRIMARY KEY,
    side  text NOT NULL CHECK (side IN ('charges', 'produits')),
    label text NOT NULL
);
INSERT INTO cerfa_heading (code, side, label) VALUES
 ('60', 'charges', 'Achats'),
 ('61', 'charges', 'Services extérieurs'),
 ('62', 'charges', 'Autres services extérieurs'),
 ('63', 'charges', 'Impôts et taxes'),
 ('64', 'charges', 'Charges de personnel'),
 ('65', 'charges', 'Autres charges de gestion courante'),
 ('66', 'charges', 'Charges financières'),
 ('67', 'charges', 'Charges exceptionnelles'),
 ('68', 'charges', 'Dotation aux amortissements'),
 ('86', 'charges', 'Emplois des contributions volontaires en nature'),
 ('70', 'produits', 'Ventes de produits finis, prestations de services'),
 ('74', 'produits', 'Subventions d''exploitation'),
 ('75', 'produits', 'Autres produits de gestion courante'),
 ('76', 'produits', 'Produits financiers'),
 ('77', 'produits', 'Produits exceptionnels'),
 ('78', 'produits', 'Reprises sur amortissements et provisions'),
 ('87', 'produits', 'Contributions volontaires en nature');

CREATE TABLE year3_decision (
    agreement_id uuid PRIMARY KEY REFERENCES agreement (id),
    decision     text NOT NULL CHECK (decision IN ('granted', 'declined')),
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    motivation   text,
    actor        text NOT NULL,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (decision = 'granted' AND amount_cents > 0 OR decision = 'declined' AND amount_cents = 0
           AND length(btrim(coalesce(motivation, ''))) > 0)
);
