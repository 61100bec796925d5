-- A version's rule checks in one row instead of one row per rule. make bench, pg_stat_statements
-- over 10 000 partner deposits at 1 000 a second: the batch statement that writes a deposit's
-- rows took 0.27 ms per deposit, most of it in the nine dossier_check rows each deposit wrote,
-- each with its primary-key entry and its foreign-key check (100 000 FOR KEY SHARE on dossier,
-- ten a deposit). The same statement over batches of 5 deposits (pgbench, one client, the
-- tables alone): 790 batches a second with a row per rule, 1 060 with a row per version. The
-- checks are written once, with their version, and never change: they are one record of one
-- evaluation, kept as the rules produced them, in their order.
-- The table's constraint keeps what the outcome's check and the columns kept: each element an
-- object with a rule (a string), a known outcome and its evidence, in one jsonpath pass (a
-- PL/pgSQL or SQL function walking the array cost the statement as much as the rows it saved;
-- this costs it 2 %). Each rule once per version, which the primary key (dossier_id, version,
-- rule) kept, is the writer's: dossier_checks() evaluates every rule once (unit-tested).
CREATE TABLE dossier_check_set (
    dossier_id      uuid NOT NULL REFERENCES dossier (id),
    version         integer NOT NULL,
    rules_version   text NOT NULL,
    -- [{rule, outcome, evidence}], in the order the rules ran
    checks          jsonb NOT NULL CHECK (jsonb_typeof(checks) = 'array' AND NOT jsonb_path_exists(
                        checks, '$[*] ? (!(@.type() == "object") || !(@.rule.type() == "string")
                                        || !(@.outcome == "pass" || @.outcome == "fail"
                                             || @.outcome == "needs_review")
                                        || !exists(@.evidence))')),
    checked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dossier_id, version)
);
INSERT INTO dossier_check_set (dossier_id, version, rules_version, checks, checked_at)
SELECT dossier_id, version, min(rules_version),
       jsonb_agg(jsonb_build_object('rule', rule, 'outcome', outcome, 'evidence', evidence)
                 ORDER BY ctid),
       min(checked_at)
  FROM dossier_check GROUP BY dossier_id, version;
DROP TABLE dossier_check;

-- Rule by rule, as the table was: what audits and reports read.
CREATE VIEW dossier_check AS
SELECT s.dossier_id, s.version, s.rules_version, c ->> 'rule' AS rule, c ->> 'outcome' AS outcome,
       c -> 'evidence' AS evidence, s.checked_at
  FROM dossier_check_set s CROSS JOIN LATERAL jsonb_array_elements(s.checks) c;
