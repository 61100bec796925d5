-- agreement_doc in PL/pgSQL: the answer of every signature, built once per row of a money batch.
-- As a SQL function it could not be inlined (it returns one value from a query) and was planned
-- again on every call; PL/pgSQL keeps the plan of its query for the session. Same query, same
-- document. make bench: signatures and payments 3 593 -> 3 852 req/s (0.13 -> 0.14).
CREATE OR REPLACE FUNCTION agreement_doc(aid uuid) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT jsonb_build_object('id', a.id, 'dossier_id', a.dossier_id, 'wave', a.wave,
            'region', a.region, 'ptce_name', a.ptce_name,
            'beneficiary', jsonb_build_object('siret', a.beneficiary_siret, 'name', a.beneficiary_name),
            'decision_reference', a.decision_reference, 'amount_cents', a.amount_cents,
            'committed_cents', a.committed_cents, 'paid_cents', a.paid_cents,
            'recovered_cents', a.recovered_cents, 'state', a.state, 'version', a.version,
            'starts_on', a.starts_on,
            'ends_on', (a.starts_on + make_interval(months => a.duration_months))::date - 1,
            'duration_months', a.duration_months, 'signed_on', a.signed_on,
            'envelope_id', a.envelope_id, 'clauses', a.clauses,
            'signatures', coalesce((SELECT jsonb_agg(jsonb_build_object('signer', s.signer,
                                        'signed_at', s.signed_at) ORDER BY s.signed_at, s.signer)
                                    FROM signature s WHERE s.agreement_id = a.id), '[]'),
            'tranches', coalesce((SELECT jsonb_agg(tranche_doc(t) ORDER BY t.rank)
                                  FROM tranche t WHERE t.agreement_id = a.id), '[]'),
            'year3', (SELECT jsonb_build_object('decision', y.decision, 'amount_cents', y.amount_cents,
                             'motivation', y.motivation, 'decided_at', y.decided_at)
                      FROM year3_decision y WHERE y.agreement_id = a.id),
            'created_at', a.created_at, 'updated_at', a.updated_at)
          FROM agreement a WHERE a.id = aid);
END $$;
