-- The submission schema's own tables arrive with the DS intake; the outbox and inbox are common.
SELECT 1;
