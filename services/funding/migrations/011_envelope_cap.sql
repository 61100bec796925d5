-- An envelope holds at most 9 999 999 999 999,99 € (api-spec's FundingEnvelopeAmountInput), so
-- that a wave's national and 18 regional envelopes sum within int64: GET /v1/stats/money
-- answered 500 when the contract fuzzing opened two envelopes of 2^63-1 cents in one wave (the
-- total, a numeric in the database, was no JSON integer the service could read).
ALTER TABLE envelope ADD CONSTRAINT envelope_amount_cap CHECK (amount_cents <= 999999999999999);
