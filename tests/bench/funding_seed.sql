-- Bench seed (funding): :n agreements of wave :wave, as the inbox would create them from
-- dossier.phase2_decided, spread over the 18 regions, then taken along the agreement's path by
-- the service's own SQL functions:
--   the first :carrier (in id order: uuids, so any region) signed by the carrier (state
--   carrier_signed, version 2, as fsm_apply leaves it), the others left draft;
--   the first :signed also signed by the State — agreement_sign(), which commits the amount on
--   the envelope and journals it, and releases the first tranche (due);
--   of those, the first :paid have that tranche paid — tranche_pay(), the ledger's payment.
-- Every euro therefore moves through envelope_commit / ledger_post as in production, so the
-- ledger and the balances agree (the script ends by checking it). What is skipped: the HTTP
-- layer and the outbox events of these steps (agreement_created, _signed, tranche_due/_paid),
-- which nothing in the bench reads. decided_at goes back up to :age_days days, so some due
-- tranches are late. The envelopes (:envelopes = national or regional) hold :n agreements.
-- Usage: psql "$DB" -v wave=W -v n=N -v carrier=C -v signed=S -v paid=P -v age_days=D -v envelopes=national
\set ON_ERROR_STOP on
SET search_path TO funding;
-- The seed is not a measured load: its commits need not wait for the disk.
SET synchronous_commit TO off;

BEGIN;
INSERT INTO envelope (wave, region, amount_cents)
SELECT :'wave', r, CASE WHEN r IS NULL THEN :n ELSE (:n + 17) / 18 END * 10000000::bigint
  FROM unnest(CASE :'envelopes' WHEN 'regional'
              THEN ARRAY['01', '02', '03', '04', '06', '11', '24', '27', '28', '32', '44', '52',
                         '53', '75', '76', '84', '93', '94']
              ELSE ARRAY[NULL] END) AS r;

CREATE TEMP TABLE seed_result ON COMMIT DROP AS
SELECT agreement_create(jsonb_build_object(
           'dossier_id', gen_random_uuid(), 'wave', :'wave', 'region', region,
           'beneficiary', jsonb_build_object('siret', '73282932000074', 'name', 'Pôle ' || g),
           'ptce_name', 'PTCE Pôle ' || g, 'reference', 'CNA-' || :'wave' || '/' || g,
           'decided_at', now() - make_interval(days => g % greatest(:age_days, 1)),
           'duration_months', 24, 'amount_cents', 10000000,
           'clauses', jsonb_build_object(
               'legal_basis', 'loi n° 2000-321 du 12 avril 2000, article 10; décret n° 2001-495',
               'objet', 'Soutien au pôle territorial de coopération économique PTCE Pôle ' || g
                        || ' au titre de l''appel à manifestation d''intérêt ' || :'wave',
               'montant', '100 000,00 euros', 'duree_mois', 24,
               'modalites_versement', jsonb_build_array(
                   jsonb_build_object('label', 'Versement à la signature', 'montant', '50 000,00',
                                      'condition', 'signature', 'due_offset_months', 0),
                   jsonb_build_object('label', 'Versement de deuxième année', 'montant', '50 000,00',
                                      'condition', 'year1_reports_approved', 'due_offset_months', 12)),
               'conditions_utilisation', 'La subvention est affectée à l''objet de la convention.'),
           'tranches', jsonb_build_array(
               jsonb_build_object('label', 'Versement à la signature', 'condition', 'signature',
                                  'amount_cents', 5000000, 'due_offset_months', 0),
               jsonb_build_object('label', 'Versement de deuxième année',
                                  'condition', 'year1_reports_approved',
                                  'amount_cents', 5000000, 'due_offset_months', 12)))) AS r
  FROM generate_series(1, :n) AS g,
       LATERAL (SELECT (ARRAY['01', '02', '03', '04', '06', '11', '24', '27', '28', '32', '44',
                              '52', '53', '75', '76', '84', '93', '94'])[1 + g % 18] AS region) x;
SELECT count(*) FILTER (WHERE r ? 'error') = 0 AS created_all FROM seed_result \gset
\if :created_all
\else
    \echo 'funding_seed: agreement_create refused an agreement'
    \quit 3
\endif

-- The carrier's signature: what fsm_apply writes (state, version + 1, history) and the
-- signature row agreement_sign() adds for a carrier.
CREATE TEMP TABLE seed_carrier ON COMMIT DROP AS
WITH moved AS (
    UPDATE agreement SET state = 'carrier_signed', version = version + 1
     WHERE id IN (SELECT id FROM agreement WHERE wave = :'wave' AND state = 'draft'
                   ORDER BY id LIMIT :carrier)
    RETURNING id),
h AS (
    INSERT INTO agreement_history (resource_id, from_state, to_state, actor, at)
    SELECT id::text, 'draft', 'carrier_signed', 'bench-seed', now() FROM moved)
SELECT id FROM moved;
INSERT INTO signature (agreement_id, signer, actor) SELECT id, 'carrier', 'bench-seed' FROM seed_carrier;
COMMIT;

-- The State's signature on the first :signed of them.
BEGIN;
CREATE TEMP TABLE seed_state ON COMMIT DROP AS
SELECT id, agreement_sign(id, 'state', 'bench-seed') AS r
  FROM (SELECT id FROM agreement WHERE wave = :'wave' AND state = 'carrier_signed'
         ORDER BY id LIMIT :signed) s;
SELECT count(*) FILTER (WHERE r ? 'error') = 0 AS signed_all FROM seed_state \gset
\if :signed_all
\else
    \echo 'funding_seed: agreement_sign refused a signature'
    \quit 3
\endif
WITH moved AS (
    UPDATE agreement a SET state = 'signed', version = version + 1
      FROM seed_state s WHERE a.id = s.id RETURNING a.id)
INSERT INTO agreement_history (resource_id, from_state, to_state, actor, at)
SELECT id::text, 'carrier_signed', 'signed', 'bench-seed', now() FROM moved;
COMMIT;

-- The first tranche of the first :paid signed agreements, paid.
BEGIN;
CREATE TEMP TABLE seed_paid ON COMMIT DROP AS
SELECT tranche_pay(t.id, 'SEED-' || t.id, current_date, 'bench-seed') AS r
  FROM (SELECT t.id FROM tranche t JOIN agreement a ON a.id = t.agreement_id
         WHERE a.wave = :'wave' AND a.state = 'signed' AND t.state = 'due'
         ORDER BY a.id LIMIT :paid) t;
SELECT count(*) FILTER (WHERE r ? 'error') = 0 AS paid_all FROM seed_paid \gset
\if :paid_all
\else
    \echo 'funding_seed: tranche_pay refused a payment'
    \quit 3
\endif
COMMIT;
