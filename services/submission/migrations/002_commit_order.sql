-- Change order a syncing client can trust. change_seq was taken at UPDATE time, and
-- transactions commit out of order: a client paging by it could move its cursor past a change
-- that committed later with a smaller number, and never see it. Each row now carries the id of
-- the transaction that last wrote it (xid8, never wraps), and the list serves only rows whose
-- transaction is older than every transaction still in flight (pg_snapshot_xmin): those are
-- final, and no later commit can ever sort before them.
ALTER TABLE dossier ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

-- Every change moves the dossier to the end of the order, whichever statement made it.
CREATE FUNCTION dossier_change_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    RETURN NEW;
END $$;
CREATE TRIGGER dossier_change_stamp BEFORE UPDATE ON dossier
    FOR EACH ROW EXECUTE FUNCTION dossier_change_stamp();

CREATE INDEX dossier_change_order ON dossier (change_xid, id);
CREATE INDEX dossier_region_change_order ON dossier (region, change_xid, id);
