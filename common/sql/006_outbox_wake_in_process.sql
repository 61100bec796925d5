-- A service wakes its own relay after the commit of a transaction that appended events (an
-- eventfd, outbox.c), and its appends set ptce.outbox_wakes_relay for their transaction. Such
-- a transaction sends no NOTIFY: a notifying commit holds a database-wide lock from its commit
-- record to its end, WAL flush included, so the commits of every service that notified went
-- through their flushes one at a time. Any other writer (a psql session, a release without the
-- wake-up during a rolling upgrade) still notifies. A relay woken so while another replica holds
-- the round notifies that one itself (outbox_relay.c).
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('ptce.outbox_wakes_relay', true) IS DISTINCT FROM 'on' THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    END IF;
    RETURN NULL;
END $$;
