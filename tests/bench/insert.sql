-- pgbench: one single-row insert per transaction, the database-alone cost of a webhook.
INSERT INTO bench_insert (procedure_id, dossier_number, payload) VALUES (12345, :aid, 'x');
