-- A webhook notice is the same notice whatever the spelling of its time: DS's Ruby form
-- ("2021-06-23 10:32:42 +0200") and ISO 8601 of the same instant are one notice. Deduplicate on
-- the parsed instant instead of the raw text (a repeat keeps the oldest row).
DELETE FROM ds_notification a USING ds_notification b
 WHERE a.procedure_id = b.procedure_id AND a.dossier_number = b.dossier_number
   AND a.state = b.state AND a.updated_at = b.updated_at AND a.id > b.id;
-- 001's constraint has a name PostgreSQL made up (and truncated): find it by what it says.
DO $$
DECLARE c name;
BEGIN
    SELECT conname INTO c FROM pg_constraint
     WHERE conrelid = 'ds_notification'::regclass AND contype = 'u'
       AND pg_get_constraintdef(oid) =
           'UNIQUE (procedure_id, dossier_number, state, updated_at_raw)';
    IF c IS NOT NULL THEN
        EXECUTE format('ALTER TABLE ds_notification DROP CONSTRAINT %I', c);
    END IF;
END $$;
ALTER TABLE ds_notification ADD CONSTRAINT ds_notification_instant
    UNIQUE (procedure_id, dossier_number, state, updated_at);
-- The pending notices of a dossier, found by the claim that coalesces them into one fetch.
CREATE INDEX ds_notification_pending_dossier ON ds_notification (dossier_number, id)
    WHERE status = 'pending';
