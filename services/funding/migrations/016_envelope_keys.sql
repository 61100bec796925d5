-- The foreign keys to envelope were a sixth of a batch's time, and half of it once the
-- envelope's lock is waited for (make bench, pg_stat_statements: a batch of 20 signatures and
-- payments took 15.0 ms, of which 4.9 ms in 40 key checks of 0.24 ms each, every one a FOR KEY
-- SHARE on the wave's national envelope, the row every other batch is updating: a MultiXact
-- each time). Without them, 8.2 ms a batch; the money load went from 2 224 to 3 580 req/s.
--
-- What they guaranteed is kept by other means, each cheaper than a row lock:
-- * an envelope is never deleted (nothing deletes one; now nothing can), so an id that existed
--   once exists for good and needs no lock to stay valid;
-- * the ledger's envelope: its statement trigger updates every envelope its rows name, and an
--   id that matches no envelope fails the statement with foreign_key_violation (23503), as the
--   key did, rather than the envelope_room refusal;
-- * an agreement's envelope: a row trigger looks the envelope up (no lock) when it changes.
ALTER TABLE ledger DROP CONSTRAINT ledger_envelope_id_fkey;
ALTER TABLE agreement DROP CONSTRAINT agreement_envelope_id_fkey;

CREATE FUNCTION envelope_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'envelopes are never deleted: the ledger and the agreements name them'
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER envelope_kept BEFORE DELETE OR TRUNCATE ON envelope
    FOR EACH STATEMENT EXECUTE FUNCTION envelope_kept();

CREATE FUNCTION agreement_envelope_exists() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM envelope WHERE id = NEW.envelope_id) THEN
        RAISE EXCEPTION 'agreement % names no envelope %', NEW.id, NEW.envelope_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'agreement_envelope_id_fkey';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER agreement_envelope_exists AFTER INSERT ON agreement
    FOR EACH ROW WHEN (NEW.envelope_id IS NOT NULL)
    EXECUTE FUNCTION agreement_envelope_exists();
CREATE TRIGGER agreement_envelope_changed AFTER UPDATE OF envelope_id ON agreement
    FOR EACH ROW WHEN (NEW.envelope_id IS DISTINCT FROM OLD.envelope_id AND NEW.envelope_id IS NOT NULL)
    EXECUTE FUNCTION agreement_envelope_exists();

CREATE OR REPLACE FUNCTION ledger_balances() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    d record;
BEGIN
    FOR d IN SELECT l.envelope_id,
                    sum(CASE l.kind WHEN 'commitment' THEN l.amount_cents
                                    WHEN 'payment' THEN 0 ELSE -l.amount_cents END) AS dc,
                    sum(CASE l.kind WHEN 'payment' THEN l.amount_cents
                                    WHEN 'recovery' THEN -l.amount_cents ELSE 0 END) AS dp
               FROM moved l GROUP BY l.envelope_id ORDER BY l.envelope_id LOOP
        UPDATE envelope SET committed_cents = committed_cents + d.dc, paid_cents = paid_cents + d.dp
         WHERE id = d.envelope_id AND committed_cents + d.dc <= amount_cents;
        IF NOT FOUND THEN
            IF NOT EXISTS (SELECT FROM envelope WHERE id = d.envelope_id) THEN
                RAISE EXCEPTION 'the ledger names no envelope %', d.envelope_id
                    USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'ledger_envelope_id_fkey';
            END IF;
            RAISE EXCEPTION 'envelope % cannot hold % more cents', d.envelope_id, d.dc
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'envelope_room';
        END IF;
    END LOOP;
    FOR d IN SELECT a.wave, coalesce(a.region, 'none') AS region,
                    sum(CASE l.kind WHEN 'commitment' THEN l.amount_cents
                                    WHEN 'payment' THEN 0 ELSE -l.amount_cents END) AS dc,
                    sum(CASE l.kind WHEN 'payment' THEN l.amount_cents
                                    WHEN 'recovery' THEN -l.amount_cents ELSE 0 END) AS dp
               FROM moved l JOIN agreement a ON a.id = l.agreement_id
              GROUP BY 1, 2 ORDER BY 1, 2 LOOP
        UPDATE money_stats SET committed_cents = committed_cents + d.dc,
                               paid_cents = paid_cents + d.dp
         WHERE wave = d.wave AND region = d.region;
    END LOOP;
    RETURN NULL;
END $$;
