"""Funding's money invariants, the open data, and the ledger under random sequences of operations.

The property test drives funding's use cases where the service runs them — the SQL functions of
services/funding/migrations/003_funding_ops.sql, each in a transaction of its own that is rolled
back on a refusal, exactly as store.c does — so that hundreds of random runs fit in seconds.
After every operation, the stored balances must agree with the ledger (ledger_check()), and
the database's own checks (tranches adding up to the amount, envelopes never over-committed)
must have held.
"""
import csv
import io
import json
import random
import re
import time
import uuid
from datetime import date

import psycopg
import pytest
import requests

from conftest import bearer, sql
from funding_helpers import (SIRETS, TIMEOUT, agreement_of, art10_clauses, decision_event,
                             get_agreement, ledger_problems, new_wave, open_envelope, publish,
                             sign)

SCDL_COLUMNS = ["nomAttribuant", "idAttribuant", "dateConvention", "referenceDecision",
                "nomBeneficiaire", "idBeneficiaire", "objet", "montant", "nature",
                "conditionsVersement", "datesPeriodeVersement", "idRAE", "notificationUE",
                "pourcentageSubvention"]
NATURES = {"aide en numéraire", "aide en nature", "aide en numéraire;aide en nature",
           "aide en nature;aide en numéraire"}


@pytest.fixture(scope="module")
def fund(urls):
    return urls["funding"]


@pytest.fixture(scope="module")
def officer(keys):
    return bearer(keys.create("funding_officer"))


def luhn_ok(siret):
    """The SIRET check (common/siret.c): Luhn, or La Poste's sum of digits divisible by 5."""
    if siret.startswith("356000000") and siret != "35600000000048":
        return sum(int(c) for c in siret) % 5 == 0
    total = 0
    for i, c in enumerate(reversed(siret)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iso_date(s):
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", s):
        return False
    try:
        date.fromisoformat(s)
    except ValueError:
        return False
    return True


def check_scdl_row(row):
    """Every rule of the SCDL subventions v2.0.1 schema, field by field; returns the problems."""
    bad = []

    def need(field, ok):
        if not ok:
            bad.append(f"{field}={row.get(field)!r}")
    for field in ("nomAttribuant", "idAttribuant", "dateConvention", "nomBeneficiaire",
                  "idBeneficiaire", "objet", "montant", "nature", "conditionsVersement",
                  "datesPeriodeVersement", "notificationUE", "pourcentageSubvention"):
        need(field, row[field] != "")  # required
    for field in ("idAttribuant", "idBeneficiaire"):
        need(field, re.fullmatch(r"[0-9]{14}", row[field]) and luhn_ok(row[field]))
    need("dateConvention", iso_date(row["dateConvention"]))
    need("objet", len(row["objet"]) <= 256)
    need("montant", re.fullmatch(r"[0-9]+(\.[0-9]+)?", row["montant"]) and float(row["montant"]) > 0)
    need("nature", row["nature"] in NATURES)
    need("conditionsVersement", row["conditionsVersement"] in ("unique", "échelonné") or
         (row["conditionsVersement"].startswith("autre") and len(row["conditionsVersement"]) <= 256))
    period = row["datesPeriodeVersement"]
    need("datesPeriodeVersement",
         re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(/[0-9]{4}-[0-9]{2}-[0-9]{2})?", period) and
         all(iso_date(d) for d in period.split("/")) and period.split("/") == sorted(period.split("/")))
    need("idRAE", len(row["idRAE"]) <= 5)
    need("notificationUE", row["notificationUE"] in ("oui", "non"))
    need("pourcentageSubvention", re.fullmatch(r"[0-9]+(\.[0-9]+)?", row["pourcentageSubvention"])
         and 0.01 <= float(row["pourcentageSubvention"]) <= 1)
    return bad


def test_open_data_is_scdl_field_by_field(fund, officer, db):
    wave = new_wave()
    open_envelope(fund, officer, wave, 10 ** 10)
    names = ['Pôle "Val, Rhône"', "Coopérative du Ségala", "SCIC L'Atelier"]
    signed = []
    for i, name in enumerate(names):
        dossier = str(uuid.uuid4())
        publish(db, decision_event(dossier, wave, siret=SIRETS[i], name=name))
        aid = agreement_of(db, dossier)
        assert sign(fund, officer, aid, "carrier").status_code == 200
        if i < 2:  # the third stays carrier_signed: not in the open data
            assert sign(fund, officer, aid, "state").status_code == 200
            signed.append(aid)
    r = requests.get(f"{fund}/v1/opendata/subventions.csv", timeout=TIMEOUT)  # no key: public
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert r.content.decode("utf-8").split("\r\n", 1)[0] == ",".join(SCDL_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))
    assert rows, "no row"
    for row in rows:
        assert list(row) == SCDL_COLUMNS and None not in row.values()
        assert check_scdl_row(row) == [], row
    ours = {row["nomBeneficiaire"]: row for row in rows if row["referenceDecision"].startswith(f"CNA-{wave}/")}
    assert set(ours) == set(names[:2])
    row = ours[names[0]]
    assert (row["idBeneficiaire"], row["montant"], row["conditionsVersement"], row["nature"]) == \
        (SIRETS[0], "100000.00", "échelonné", "aide en numéraire")
    assert (row["nomAttribuant"], row["idAttribuant"]) == \
        ("Ministère de l'Économie - Économie sociale et solidaire", "11000201100044")
    assert row["dateConvention"] == date.today().isoformat()


def test_the_checker_refuses_bad_rows():
    """The field-by-field checker is not a rubber stamp."""
    good = dict(zip(SCDL_COLUMNS, ["État", "11000201100044", "2026-12-01", "CNA-1", "Pôle",
                                   "73282932000074", "Soutien", "100000.00", "aide en numéraire",
                                   "échelonné", "2026-12-01/2027-12-01", "", "non", "1.00"]))
    assert check_scdl_row(good) == []
    for field, value in [("idBeneficiaire", "73282932000075"), ("idAttribuant", "1100020110004"),
                         ("dateConvention", "2026-13-01"), ("montant", "100000,00"),
                         ("nature", "numéraire"), ("datesPeriodeVersement", "2027-12-01/2026-12-01"),
                         ("notificationUE", "false"), ("pourcentageSubvention", "100"),
                         ("objet", "x" * 257), ("nomBeneficiaire", ""), ("idRAE", "123456")]:
        assert check_scdl_row({**good, field: value}) != [], field


def test_a_schedule_that_does_not_add_up_is_refused(fund, officer, db, admin_url):
    wave = new_wave()
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave))
    aid = agreement_of(db, dossier)
    doc, _ = get_agreement(fund, officer, aid)
    tranche = doc["tranches"][0]["id"]
    with pytest.raises(psycopg.errors.CheckViolation):
        sql(db, "UPDATE funding.tranche SET amount_cents = amount_cents + 1 WHERE id = %s", tranche)
    with pytest.raises(psycopg.errors.CheckViolation):
        sql(db, "UPDATE funding.agreement SET amount_cents = amount_cents - 1 WHERE id = %s", aid)
    # Moving cents between tranches inside one transaction keeps the sum: accepted.
    with db.transaction():
        sql(db, "UPDATE funding.tranche SET amount_cents = amount_cents + 100 WHERE id = %s", tranche)
        sql(db, "UPDATE funding.tranche SET amount_cents = amount_cents - 100"
                " WHERE agreement_id = %s AND id <> %s", aid, tranche)
    # A schedule handed to agreement_create that does not add up creates nothing.
    other = str(uuid.uuid4())
    payload = {"dossier_id": other, "wave": wave, "region": "84", "reference": "X",
               "decided_at": "2026-06-01T00:00:00Z", "duration_months": 24, "amount_cents": 1000,
               "beneficiary": {"siret": SIRETS[0], "name": "n"}, "clauses": art10_clauses(),
               "tranches": [{"label": "a", "condition": "signature", "due_offset_months": 0,
                             "amount_cents": 600},
                            {"label": "b", "condition": "signature", "due_offset_months": 0,
                             "amount_cents": 500}]}
    with pytest.raises(psycopg.errors.CheckViolation):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            with conn.transaction():
                sql(conn, "SET LOCAL search_path TO funding")
                sql(conn, "SELECT agreement_create(%s::jsonb)", json.dumps(payload))
    assert sql(db, "SELECT count(*) FROM funding.agreement WHERE dossier_id = %s", other)[0][0] == 0
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation):
        sql(db, "DELETE FROM funding.ledger WHERE false")  # the journal is append-only


def test_the_references_to_envelopes_hold_without_foreign_keys(db):
    """Migration 016 dropped the foreign keys to envelope (their row locks on the hot envelope
    were a sixth of a money batch): an envelope cannot be deleted, and a ledger row or an
    agreement naming no envelope is refused with foreign_key_violation, as the keys did."""
    wave = new_wave()
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave))
    aid = agreement_of(db, dossier)
    nowhere = str(uuid.uuid4())
    with pytest.raises(psycopg.errors.RestrictViolation):
        sql(db, "DELETE FROM funding.envelope WHERE false")
    with pytest.raises(psycopg.errors.RestrictViolation):
        sql(db, "TRUNCATE funding.envelope CASCADE")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="names no envelope"):
        sql(db, "INSERT INTO funding.ledger (kind, envelope_id, agreement_id, amount_cents, actor)"
                " VALUES ('commitment', %s, %s, 1, 'test')", nowhere, aid)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="names no envelope"):
        sql(db, "UPDATE funding.agreement SET envelope_id = %s WHERE id = %s", nowhere, aid)
    # (that an envelope which exists is taken, every money test shows)


def test_an_agreement_without_its_clauses_is_refused(db, admin_url):
    """GET /v1/agreements promises FundingClauses (legal_basis, objet, montant…): an agreement
    handed to agreement_create without them is refused by the database, so that no creation
    path can leave one that the API would answer against its spec."""
    wave = new_wave()
    for clauses in ({}, {k: v for k, v in art10_clauses().items() if k != "legal_basis"}, []):
        other = str(uuid.uuid4())
        payload = {"dossier_id": other, "wave": wave, "region": "84", "reference": "X",
                   "decided_at": "2026-06-01T00:00:00Z", "duration_months": 24,
                   "amount_cents": 1000, "beneficiary": {"siret": SIRETS[0], "name": "n"},
                   "clauses": clauses, "tranches": [{"label": "a", "condition": "signature",
                                                     "due_offset_months": 0, "amount_cents": 1000}]}
        with pytest.raises(psycopg.errors.CheckViolation, match="agreement_clauses_complete"):
            with psycopg.connect(admin_url, autocommit=True) as conn:
                with conn.transaction():
                    sql(conn, "SET LOCAL search_path TO funding")
                    sql(conn, "SELECT agreement_create(%s::jsonb)", json.dumps(payload))
        assert sql(db, "SELECT count(*) FROM funding.agreement WHERE dossier_id = %s",
                   other)[0][0] == 0


# ---- the property test ----

RUNS = 300
OPS_PER_RUN = 16
TIME_BUDGET_S = 240


class Model:
    """One run: a wave, one envelope, a few agreements, random operations through the SQL."""

    def __init__(self, conn, rnd):
        self.conn, self.rnd = conn, rnd
        self.wave = new_wave()
        self.refused = 0
        amount = rnd.choice([1, 2, 3]) * 10 ** 7
        sql(conn, "INSERT INTO envelope (wave, region, amount_cents) VALUES (%s, NULL, %s)",
            self.wave, amount)
        self.agreements = [self.create() for _ in range(rnd.randint(1, 4))]

    def call(self, query, *params):
        """One use case in its own transaction, rolled back when it answers a refusal."""
        with self.conn.transaction() as tx:
            rows = sql(self.conn, query, *params)
            doc = rows[0][0] if rows else None
            if isinstance(doc, dict) and "error" in doc:
                self.refused += 1
                raise psycopg.Rollback(tx)
        return doc

    def create(self):
        rnd = self.rnd
        amount = rnd.randint(1, 2 * 10 ** 7)
        n = rnd.randint(1, 3)
        cuts = sorted(rnd.randint(0, amount) for _ in range(n - 1))
        parts = [b - a for a, b in zip([0] + cuts, cuts + [amount])]
        conds = ["signature", "year1_reports_approved", "year2_reports_approved"]
        payload = {"dossier_id": str(uuid.uuid4()), "wave": self.wave, "region": "84",
                   "reference": "P", "decided_at": "2026-01-01T00:00:00Z", "duration_months": 24,
                   "amount_cents": amount, "beneficiary": {"siret": SIRETS[0], "name": "n"},
                   "clauses": art10_clauses(amount), "tranches": [{"label": f"t{i}", "condition": conds[i],
                                                "due_offset_months": 12 * i, "amount_cents": p}
                                               for i, p in enumerate(parts)]}
        return self.call("SELECT agreement_create(%s::jsonb)", json.dumps(payload))["id"]

    def tranches(self, aid):
        return [str(t) for (t,) in sql(self.conn, "SELECT id FROM tranche WHERE agreement_id = %s",
                                       aid)]

    def step(self):
        rnd = self.rnd
        aid = rnd.choice(self.agreements)
        ts = self.tranches(aid)
        tid = rnd.choice(ts) if ts else str(uuid.uuid4())
        op = rnd.choice(["sign", "sign", "pay", "pay", "pay", "cancel", "reduce", "recover",
                         "reports", "year3", "batch"])
        if op == "batch":
            self.batch()
        elif op == "sign":
            with self.conn.transaction() as tx:
                moved = sql(self.conn, "UPDATE agreement SET state = 'signed', version = version + 1"
                                       " WHERE id = %s AND state = 'draft' RETURNING id", aid)
                doc = sql(self.conn, "SELECT agreement_sign(%s, 'state', 'prop')", aid)[0][0] \
                    if moved else {"error": "conflict"}
                if "error" in doc:
                    self.refused += 1
                    raise psycopg.Rollback(tx)
        elif op == "pay":
            due = [str(t) for (t,) in sql(self.conn, "SELECT id FROM tranche WHERE agreement_id = %s"
                                                     " AND state = 'due'", aid)]
            self.call("SELECT tranche_pay(%s, 'R', current_date, 'prop')", rnd.choice(due or [tid]))
        elif op == "cancel":
            self.call("SELECT tranche_cancel(%s, 'm', 'prop')", tid)
        elif op == "reduce":
            self.call("SELECT agreement_reduce(%s, %s, 'm', 'prop')", aid, rnd.randint(1, 10 ** 7))
        elif op == "recover":
            self.call("SELECT tranche_recover(%s, %s, 'OR', 'prop')", tid, rnd.randint(1, 10 ** 7))
        elif op == "reports":
            year = rnd.choice([1, 2])
            for (rid, kind) in sql(self.conn, "SELECT id, kind FROM report WHERE agreement_id = %s"
                                              " AND year = %s", aid, year):
                body = {"indicators": [{"code": "members", "value": 1}]} if kind == "progress" \
                    else {"lines": [{"heading": "64", "actual_cents": 1}]}
                self.call("SELECT report_submit(%s, %s::jsonb)", rid, json.dumps(body))
                self.call("SELECT report_review(%s, 'approved', NULL)", rid)
        else:
            granted = rnd.random() < 0.7
            self.call("SELECT year3_decide(%s, %s, %s, %s, 'prop')", aid,
                      "granted" if granted else "declined",
                      rnd.randint(1, 2 * 10 ** 7) if granted else 0, None if granted else "non")

    def batch(self):
        """Signatures and payments in one money_batch call, as funding's batches send them:
        some on the same agreement (later rounds), some with a stale version, some not due."""
        rnd, ops = self.rnd, []
        for n in range(rnd.randint(1, 6)):
            aid = rnd.choice(self.agreements)
            if rnd.random() < 0.5:
                version = sql(self.conn, "SELECT version FROM agreement WHERE id = %s", aid)[0][0]
                ops.append({"n": n, "kind": "sign", "id": aid, "signer": "state",
                            "version": version + (1 if rnd.random() < 0.2 else 0),
                            "from_state": "draft", "to_state": "signed", "actor": "prop"})
            else:
                ts = self.tranches(aid) or [str(uuid.uuid4())]
                ops.append({"n": n, "kind": "pay", "id": rnd.choice(ts), "reference": "B",
                            "paid_on": "2026-03-01", "actor": "prop"})
        with self.conn.transaction():
            out = sql(self.conn, "SELECT n, status FROM money_batch(%s::jsonb)", json.dumps(ops))
        assert sorted(n for n, _ in out) == list(range(len(ops)))
        self.refused += sum(1 for _, st in out if st != "ok")

    def check(self):
        problems = sql(self.conn, "SELECT ledger_check()")[0][0]
        assert problems == [], problems
        over = sql(self.conn, "SELECT count(*) FROM envelope WHERE committed_cents > amount_cents"
                              " OR paid_cents > committed_cents")[0][0]
        assert over == 0
        off = sql(self.conn, "SELECT count(*) FROM agreement a WHERE a.wave = %s AND a.amount_cents <>"
                             " (SELECT coalesce(sum(amount_cents), 0) FROM tranche t"
                             "  WHERE t.agreement_id = a.id AND t.state <> 'cancelled')", self.wave)[0][0]
        assert off == 0


def test_ledger_and_balances_agree_under_random_operations(admin_url, db):
    seed = random.randrange(2 ** 32)
    rnd = random.Random(seed)
    started = time.monotonic()
    refused = ops = 0
    with psycopg.connect(admin_url, autocommit=True) as conn:
        sql(conn, "SET search_path TO funding")
        for run in range(RUNS):
            model = Model(conn, rnd)
            for _ in range(OPS_PER_RUN):
                model.step()
                ops += 1
                try:
                    model.check()
                except AssertionError as e:
                    raise AssertionError(f"seed {seed}, run {run}: {e}") from None
            refused += model.refused
            assert time.monotonic() - started < TIME_BUDGET_S, f"too slow after {run} runs"
    moved = sql(db, "SELECT count(*) FROM funding.ledger WHERE actor = 'prop'")[0][0]
    print(f"\nproperty: seed {seed}, {RUNS} runs, {ops} operations, {refused} refused, "
          f"{moved} ledger rows, {time.monotonic() - started:.1f}s")
    assert moved > RUNS and refused > 0  # the runs moved money, and met refusals
    assert ledger_problems(db) == []
