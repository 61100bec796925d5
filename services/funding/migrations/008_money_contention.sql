-- Money moves without serialising on a database-wide lock or an envelope row (make bench:
-- signatures and payments at 64 connections ran at 0.03 x pgbench's insert rate, every
-- backend waiting on one of the two).

-- 1. No NOTIFY on funding's outbox. A notifying transaction holds a database-wide lock from
-- its commit until its end, WAL flush included, so every signature and payment (each appends
-- events) committed one at a time, with no group commit. The relay finds the rows at its next
-- round instead (PTCE_OUTBOX_POLL_MS), as submission's ds_notification workers do.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;

-- 2. The envelope's balances move at commit. envelope_commit and ledger_post used to lock the
-- envelope row first thing, and every commitment and payment of a wave (all of them, with a
-- national envelope) then waited for the one before to finish its statements, its outbox
-- inserts, its round trips and its commit. Now a ledger row carries the movement and a
-- deferred trigger applies it to the envelope at commit, so the row lock is held only for the
-- commit itself. envelope_commit still refuses beyond what is left (a clean 409, as the
-- committed balances stand); two commitments that each fitted but do not fit together meet
-- in the trigger, under the row lock, where the later one fails its commit with SQLSTATE
-- 23505, the code the services answer 409 for (db_status_from_sqlstate); the CHECK on the
-- envelope stays as the last line.
CREATE FUNCTION ledger_to_envelope() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    dc bigint := CASE NEW.kind WHEN 'commitment' THEN NEW.amount_cents
                               WHEN 'payment' THEN 0 ELSE -NEW.amount_cents END;
    dp bigint := CASE NEW.kind WHEN 'payment' THEN NEW.amount_cents
                               WHEN 'recovery' THEN -NEW.amount_cents ELSE 0 END;
BEGIN
    UPDATE envelope SET committed_cents = committed_cents + dc, paid_cents = paid_cents + dp
     WHERE id = NEW.envelope_id AND committed_cents + dc <= amount_cents;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'envelope % cannot hold % more cents', NEW.envelope_id, dc
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_to_envelope AFTER INSERT ON ledger
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_to_envelope();

CREATE OR REPLACE FUNCTION envelope_commit(eid uuid, aid uuid, amount bigint, tid uuid, actor text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    e envelope;
BEGIN
    SELECT * INTO e FROM envelope WHERE id = eid;
    IF e.amount_cents - e.committed_cents < amount THEN
        RETURN fail('conflict', format('envelope %s (wave %s, region %s) has %s cents left; %s are needed',
                    e.id, e.wave, coalesce(e.region, 'national'), e.amount_cents - e.committed_cents, amount));
    END IF;
    UPDATE agreement SET committed_cents = committed_cents + amount, envelope_id = eid WHERE id = aid;
    IF amount > 0 THEN -- an agreement reduced to nothing is committed, and journals nothing
        INSERT INTO ledger (kind, envelope_id, agreement_id, tranche_id, amount_cents, actor)
        VALUES ('commitment', eid, aid, tid, amount, actor);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ledger_post(kind text, aid uuid, tid uuid, amount bigint, ref text, actor text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    eid uuid := (SELECT envelope_id FROM agreement WHERE id = aid);
    dc bigint := CASE kind WHEN 'commitment' THEN amount WHEN 'payment' THEN 0 ELSE -amount END;
    dp bigint := CASE kind WHEN 'payment' THEN amount WHEN 'recovery' THEN -amount ELSE 0 END;
BEGIN
    IF eid IS NULL OR amount = 0 THEN
        RETURN; -- nothing committed yet: no money moved
    END IF;
    UPDATE agreement SET committed_cents = committed_cents + dc, paid_cents = paid_cents + dp,
           recovered_cents = recovered_cents + CASE kind WHEN 'recovery' THEN amount ELSE 0 END,
           updated_at = now()
     WHERE id = aid;
    INSERT INTO ledger (kind, envelope_id, agreement_id, tranche_id, amount_cents, reference, actor)
    VALUES (kind, eid, aid, tid, amount, ref, actor);
END $$;
