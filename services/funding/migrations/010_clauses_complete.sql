-- An agreement's clauses hold what loi 2000-321 art. 10 asks of a convention, every member that
-- api-spec's FundingClauses requires: the service builds them so (funding_clauses_build), and
-- the database now refuses a row without them, as agreement_create was handed by test fixtures
-- ('{}'), which GET /v1/agreements then answered against the spec.
ALTER TABLE agreement ADD CONSTRAINT agreement_clauses_complete CHECK (
    jsonb_typeof(clauses) = 'object'
    AND clauses ?& ARRAY['legal_basis', 'objet', 'montant', 'modalites_versement',
                         'conditions_utilisation', 'duree_mois']);
