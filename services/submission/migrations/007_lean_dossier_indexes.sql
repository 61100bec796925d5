-- Two index entries and a sequence number less on every dossier write. change_seq has had no
-- reader since 002 (the list pages by change_xid, which a later commit can never sort before):
-- it was still drawn from its sequence on every insert and update, and kept in two indexes no
-- query uses. ds_number is NULL for every partner deposit, and a unique index holds an entry for
-- each NULL all the same: the index now holds DS's dossiers only, with the same uniqueness
-- (NULLs never collided) and the same lookups (ds_number = $1 implies it is not NULL).
-- make bench's deposit load writes about 30 index entries a deposit across submission and
-- instruction (pg_waldump, Btree/INSERT_LEAF); these were 3 of them.
-- The column and its sequence stay, without default or NOT NULL, for the replicas of the release
-- before, which still set change_seq on update while a rolling upgrade replaces them; a later
-- migration drops both once no such replica can be running.
DROP INDEX dossier_change;
DROP INDEX dossier_region_change;
ALTER TABLE dossier ALTER COLUMN change_seq DROP DEFAULT, ALTER COLUMN change_seq DROP NOT NULL;
ALTER TABLE dossier DROP CONSTRAINT dossier_ds_number_key;
CREATE UNIQUE INDEX dossier_ds_number ON dossier (ds_number) WHERE ds_number IS NOT NULL;
