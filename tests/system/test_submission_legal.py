"""The submission service on a démarche opened to legal persons: the carrier is the demandeur.

The DS fake holds a second démarche (23456, tests/dsfake/fixtures/make_fixtures.py) whose
form has no carrier champ: DS gives the carrier as the dossier's demandeur (a PersonneMorale,
or a PersonneMoraleIncomplete with the SIRET only). These tests restart submission on that
démarche with its mapping file (PTCE_DS_DEMARCHE, PTCE_DS_MAPPING_FILE), deposit copies of
its fixtures under fresh numbers, and restore the default service at the end. A mapping file
that names an unknown model field keeps the service from starting.
"""
import json
import os
import subprocess

import pytest

from conftest import ROOT, sql, wait_until
from test_submission_ds import checks_of, deposit, make_dossier, wait_dossier, webhook

LEGAL_DEMARCHE = 23456
LEGAL_MAPPING = os.path.join(ROOT, "tests", "dsfake", "fixtures", "ds_mapping_legal.json")
PTCE_NAME = "PTCE Réemploi du Val"  # the "Nom du pôle" champ of the fixtures
RULE = "carrier.private_legal_person"


def log_tail(stack, name, since):
    with open(stack.log_path(name), encoding="utf-8", errors="replace") as f:
        f.seek(since)
        return f.read()


def test_bad_mapping_file_keeps_submission_from_starting(stack, tmp_path):
    with open(LEGAL_MAPPING, encoding="utf-8") as f:
        mapping = json.load(f)
    mapping["dossier"]["carrier_sirett"] = mapping["dossier"].pop("carrier_siret")
    mapping["dossier"]["carrier_name"] = "demandeur..entreprise"
    bad = tmp_path / "bad-mapping.json"
    bad.write_text(json.dumps(mapping), encoding="utf-8")

    stack.stop_service("submission")
    mark = os.path.getsize(stack.log_path("submission"))
    try:
        with pytest.raises(subprocess.CalledProcessError):
            stack.start_service("submission", PTCE_DS_MAPPING_FILE=str(bad))
        assert stack.wait_exit("submission", 10), "submission runs on a bad mapping"
        log = log_tail(stack, "submission", mark)
        assert "ds.mapping_invalid" in log, log[-2000:]
        assert "dossier.carrier_sirett: unknown model field" in log, log[-2000:]
        assert 'dossier.carrier_name: bad path \\"demandeur..entreprise\\"' in log, log[-2000:]
    finally:
        stack.start_service("submission")


@pytest.fixture(scope="module")
def legal_submission(stack):
    """Submission restarted on the legal-person démarche; the default one again afterwards."""
    stack.stop_service("submission")
    try:
        stack.start_service("submission", PTCE_DS_DEMARCHE=str(LEGAL_DEMARCHE),
                            PTCE_DS_MAPPING_FILE=LEGAL_MAPPING)
        yield
    finally:
        stack.stop_service("submission")
        stack.start_service("submission")


def legal_deposit(urls, db, dsfake, template):
    d = make_dossier(template)
    assert d["demarche"] == {"number": LEGAL_DEMARCHE}
    number = deposit(dsfake, d)
    r = webhook(urls, number, procedure_id=LEGAL_DEMARCHE)
    assert r.status_code == 202, r.text
    return d, wait_dossier(db, number)


@pytest.mark.parametrize("template, category", [(5001, "9220"), (5002, "5499")],
                         ids=["association", "sarl"])
def test_private_law_demandeur_is_eligible(legal_submission, urls, db, dsfake, template, category):
    d, row = legal_deposit(urls, db, dsfake, template)
    doc = row["document"]
    demandeur = d["demandeur"]
    assert row["eligibility"] == "eligible", doc["checks"]
    assert all(c["outcome"] == "pass" for c in doc["checks"]), doc["checks"]
    assert doc["carrier"] == {"siret": demandeur["siret"],
                              "name": demandeur["entreprise"]["raisonSociale"],
                              "legal_form": demandeur["entreprise"]["formeJuridique"],
                              "legal_category": category}
    check = checks_of(doc)[RULE]
    assert check["evidence"]["legal_category"] == category and check["evidence"]["answer"] is None
    assert doc["ptce_name"] == doc["title"] == PTCE_NAME
    assert doc["main_document"]["verification"] == "verified"
    if template == 5001:  # the title travels with the event to instruction's projection
        projected = wait_until(lambda: sql(db, "SELECT title FROM instruction.dossier WHERE id = %s",
                                           row["id"]), timeout=20, what="instruction's projection")
        assert projected == [(PTCE_NAME,)]


def test_public_law_demandeur_is_ineligible(legal_submission, urls, db, dsfake):
    _, row = legal_deposit(urls, db, dsfake, 5003)
    checks = checks_of(row["document"])
    assert row["eligibility"] == "ineligible"
    assert checks[RULE]["outcome"] == "fail"
    assert checks[RULE]["evidence"]["legal_category"] == "7210"
    assert sorted(r for r, c in checks.items() if c["outcome"] != "pass") == [RULE]
    assert sql(db, "SELECT outcome, evidence->>'legal_category' FROM submission.dossier_check"
                   " WHERE dossier_id = %s AND rule = %s", row["id"], RULE) == [("fail", "7210")]


def test_incomplete_demandeur_needs_review(legal_submission, urls, db, dsfake):
    d, row = legal_deposit(urls, db, dsfake, 5004)
    doc = row["document"]
    checks = checks_of(doc)
    assert row["eligibility"] == "needs_review"
    assert sorted(r for r, c in checks.items() if c["outcome"] != "pass") == [RULE]
    assert checks[RULE]["outcome"] == "needs_review"
    assert checks[RULE]["evidence"]["legal_category"] is None
    assert doc["carrier"]["siret"] == d["demandeur"]["siret"]  # the SIRET is all DS gave
    assert doc["carrier"]["name"] is None and doc["carrier"]["legal_category"] is None
    assert checks["carrier.siret"]["outcome"] == "pass"
