-- Funding's own tables arrive with the agreements issue; the outbox and inbox are common.
SELECT 1;
