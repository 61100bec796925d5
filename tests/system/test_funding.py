"""Funding: from a phase-2 decision to the last tranche paid, envelopes that never over-commit.

Decisions are published through instruction's outbox as instruction will (funding_helpers);
everything else goes through funding's HTTP API, with keys made by ptce-admin. Every test uses
its own wave, so their envelopes and statistics do not see each other.
"""
import json
import threading
import time
import uuid

import psycopg
import pytest
import requests

from conftest import REGIONS, bearer, sql, wait_until
from funding_helpers import (SIRETS, TIMEOUT, agreement_of, applied, approve_year, decision_event,
                             get_agreement, ledger_problems, new_wave, open_envelope, pay, publish,
                             sign)
from test_openapi_conformance import check_event, conform

AMOUNT = 10000000  # 100 000,00 €, the default of a wave funding never heard of


@pytest.fixture(scope="module")
def fund(urls):
    return urls["funding"]


@pytest.fixture(scope="module")
def officer(keys):
    return bearer(keys.create("funding_officer"))


@pytest.fixture(scope="module")
def dashboard(keys):
    return bearer(keys.create("dashboard"))


def events_of(db, aid):
    rows = sql(db, "SELECT type, payload FROM funding.outbox WHERE key = %s ORDER BY id", aid)
    return [(t, json.loads(p)) for t, p in rows]


def test_whole_path_from_decision_to_last_tranche(fund, officer, db):
    wave = new_wave()
    env = open_envelope(fund, officer, wave, 15 * AMOUNT)
    assert env["remaining_cents"] == 15 * AMOUNT and env["committed_cents"] == 0
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave, region="84", siret=SIRETS[0]))
    aid = agreement_of(db, dossier)

    r = requests.get(f"{fund}/v1/agreements/{aid}", headers=officer, timeout=TIMEOUT)
    doc = conform(r, "/v1/agreements/{id}", "get")
    assert r.status_code == 200 and r.headers["ETag"] == '"v1"'
    assert {k: doc[k] for k in ("id", "dossier_id", "wave", "amount_cents", "state")} == \
        {"id": aid, "dossier_id": dossier, "wave": wave, "amount_cents": AMOUNT, "state": "draft"}
    assert [(t["amount_cents"], t["state"]) for t in doc["tranches"]] == \
        [(AMOUNT // 2, "scheduled"), (AMOUNT // 2, "scheduled")]
    assert {"id", "amount_cents", "state", "due_on"} <= set(doc["tranches"][0])
    assert {"objet", "montant", "modalites_versement", "conditions_utilisation"} <= set(doc["clauses"])
    r = requests.get(f"{fund}/v1/agreements/{aid}", timeout=TIMEOUT,
                     headers={**officer, "If-None-Match": '"v1"'})
    assert r.status_code == 304
    assert r.content == b"" and "Content-Type" not in r.headers
    r = requests.get(f"{fund}/v1/agreements/{aid}", timeout=TIMEOUT,
                     headers={**officer, "If-None-Match": "v1"})
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/problem+json")

    # The signatures: If-Match is required, the carrier first, then the State commits.
    r = requests.post(f"{fund}/v1/agreements/{aid}/signatures", json={"signer": "carrier"},
                      headers=officer, timeout=TIMEOUT)
    assert r.status_code == 428
    r = sign(fund, officer, aid, "carrier", etag='"v7"')
    assert r.status_code == 412
    r = sign(fund, officer, aid, "state")
    conform(r, "/v1/agreements/{id}/signatures", "post")
    assert r.status_code == 409  # draft → signed is not a transition
    assert r.json()["detail"] == "the agreement is draft; from there it may go to: carrier_signed"
    r = sign(fund, officer, aid, "carrier")
    assert r.status_code == 200 and r.json()["state"] == "carrier_signed", r.text
    r = sign(fund, officer, aid, "state")
    doc = conform(r, "/v1/agreements/{id}/signatures", "post")
    assert r.status_code == 200 and doc["state"] == "signed" and doc["committed_cents"] == AMOUNT
    first, second = doc["tranches"]
    assert first["state"] == "due" and second["state"] == "scheduled"

    # Tranche 1: paid once; a second payment is refused and changes nothing.
    r = pay(fund, officer, first["id"], "VIR-2026-001")
    assert conform(r, "/v1/tranches/{id}/payments", "post")["state"] == "paid"
    r = pay(fund, officer, first["id"], "VIR-2026-001-bis")
    conform(r, "/v1/tranches/{id}/payments", "post")
    assert r.status_code == 409
    r = pay(fund, officer, second["id"])
    assert r.status_code == 409  # not due before the year-1 reports are approved
    assert sql(db, "SELECT count(*) FROM funding.ledger WHERE tranche_id = %s", first["id"])[0][0] == 1

    # Year 1 reviewed: tranche 2 falls due and is paid.
    approve_year(fund, officer, aid, 1)
    doc, _ = get_agreement(fund, officer, aid)
    assert doc["state"] == "active" and doc["tranches"][1]["state"] == "due"
    assert pay(fund, officer, second["id"], "VIR-2027-001").status_code == 200

    # Year 3: refused before the year-2 review, then granted within the envelope.
    _, etag = get_agreement(fund, officer, aid)
    body = {"decision": "granted", "amount_cents": 3000000, "motivation": "Bilan de deuxième année"}
    r = requests.post(f"{fund}/v1/agreements/{aid}/year3", json=body,
                      headers={**officer, "If-Match": etag}, timeout=TIMEOUT)
    conform(r, "/v1/agreements/{id}/year3", "post")
    assert r.status_code == 409
    approve_year(fund, officer, aid, 2)
    _, etag = get_agreement(fund, officer, aid)
    r = requests.post(f"{fund}/v1/agreements/{aid}/year3", json=body,
                      headers={**officer, "If-Match": etag}, timeout=TIMEOUT)
    doc = conform(r, "/v1/agreements/{id}/year3", "post")
    assert r.status_code == 201, r.text
    assert doc["amount_cents"] == AMOUNT + 3000000 and doc["year3"]["decision"] == "granted"
    third = doc["tranches"][2]
    assert third["state"] == "due" and third["amount_cents"] == 3000000
    assert pay(fund, officer, third["id"], "VIR-2028-001").status_code == 200

    doc, _ = get_agreement(fund, officer, aid)
    assert doc["state"] == "closed" and doc["paid_cents"] == AMOUNT + 3000000
    r = requests.get(f"{fund}/v1/agreements/{aid}/versions", headers=officer, timeout=TIMEOUT)
    versions = conform(r, "/v1/agreements/{id}/versions", "get")["items"]
    assert [v["kind"] for v in versions] == ["initial", "year3"]
    assert versions[0]["agreement"]["amount_cents"] == AMOUNT

    r = requests.get(f"{fund}/v1/stats/money", params={"wave": wave}, headers=officer, timeout=TIMEOUT)
    stats = conform(r, "/v1/stats/money", "get")
    assert (stats["envelope_cents"], stats["committed_cents"], stats["paid_cents"],
            stats["remaining_cents"], stats["agreements"]) == \
        (15 * AMOUNT, AMOUNT + 3000000, AMOUNT + 3000000, 14 * AMOUNT - 3000000, 1)
    assert stats["by_region"]["84"]["agreements"] == 1
    r = requests.get(f"{fund}/v1/ledger", params={"agreement_id": aid}, headers=officer, timeout=TIMEOUT)
    ledger = conform(r, "/v1/ledger", "get")
    assert [e["kind"] for e in ledger["items"]] == \
        ["commitment", "payment", "payment", "commitment", "payment"]
    assert ledger["discrepancies"] == [] and ledger_problems(db) == []

    # Every event the path published matches api-spec/asyncapi.yaml.
    published = events_of(db, aid)
    types = [t for t, _ in published]
    assert types.count("funding.agreement_created") == 1
    assert types.count("funding.agreement_signed") == 2
    assert types.count("funding.tranche_due") == 3 and types.count("funding.tranche_paid") == 3
    assert types.count("funding.year3_decided") == 1
    for t, ev in published:
        check_event(ev, t)


def test_if_match_on_the_changes_of_an_agreement(fund, officer, db):
    """A signature, a reduction and a year-3 decision each name the agreement's version, alike:
    no If-Match is 428; an empty one (an empty list, RFC 9110 §5.6.1, as an empty If-None-Match
    is), a stale or a weak one names no current version, 412 with the current ETag; one that is
    not a list of entity tags is 400. None of them changes anything."""
    wave = new_wave()
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave))
    aid = agreement_of(db, dossier)
    changes = {"signatures": {"signer": "carrier"},
               "reductions": {"amount_cents": 1, "motivation": "m"},
               "year3": {"decision": "declined", "motivation": "m"}}
    for path, body in changes.items():
        op = f"/v1/agreements/{{id}}/{path}"
        for header, status, detail in [
                (None, 428, "If-Match with the resource's ETag is required"),
                ("", 412, 'the agreement is at version 1 (ETag "v1")'),
                ('"v2"', 412, 'the agreement is at version 1 (ETag "v1")'),
                ('W/"v1"', 412, 'the agreement is at version 1 (ETag "v1")'),
                ("v1", 400, "If-Match is not a list of entity tags"),
                (",", 400, "If-Match is not a list of entity tags")]:
            headers = dict(officer) if header is None else {**officer, "If-Match": header}
            r = requests.post(f"{fund}/v1/agreements/{aid}/{path}", json=body, headers=headers,
                              timeout=TIMEOUT)
            problem = conform(r, op, "post")
            assert (r.status_code, problem["detail"]) == (status, detail), (path, header, r.text)
    doc, etag = get_agreement(fund, officer, aid)
    assert (etag, doc["state"], doc["signatures"], doc["amount_cents"]) == ('"v1"', "draft", [], AMOUNT)
    r = requests.get(f"{fund}/v1/agreements/{aid}/versions", headers=officer, timeout=TIMEOUT)
    assert [v["kind"] for v in r.json()["items"]] == ["initial"]


def test_concurrent_commitments_never_exceed_the_envelope(fund, officer, db):
    """50 State signatures at once against an envelope with room for 15: exactly 15 commit."""
    wave = new_wave()
    open_envelope(fund, officer, wave, 15 * AMOUNT, region="11")
    dossiers = [str(uuid.uuid4()) for _ in range(50)]
    publish(db, *[decision_event(d, wave, region="11", siret=SIRETS[i % len(SIRETS)])
                  for i, d in enumerate(dossiers)])
    aids = [agreement_of(db, d) for d in dossiers]
    etags = {}
    for aid in aids:
        r = sign(fund, officer, aid, "carrier")
        assert r.status_code == 200, r.text
        etags[aid] = r.headers["ETag"]
    codes = []
    barrier = threading.Barrier(len(aids))

    def commit(aid):
        barrier.wait()
        codes.append(sign(fund, officer, aid, "state", etag=etags[aid]).status_code)

    threads = [threading.Thread(target=commit, args=(a,)) for a in aids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(set(codes)) == [200, 409] and codes.count(200) == 15, codes
    env = sql(db, "SELECT amount_cents, committed_cents FROM funding.envelope WHERE wave = %s", wave)
    assert env == [(15 * AMOUNT, 15 * AMOUNT)]
    assert sql(db, "SELECT count(*) FROM funding.agreement WHERE wave = %s AND state = 'signed'",
               wave)[0][0] == 15
    assert ledger_problems(db) == []


def test_a_replayed_decision_creates_one_agreement(fund, officer, db):
    wave = new_wave()
    dossier = str(uuid.uuid4())
    ev = decision_event(dossier, wave)
    again = dict(ev, id=str(uuid.uuid4()))  # the same decision under a new event id
    publish(db, ev)
    aid = agreement_of(db, dossier)
    publish(db, again)  # the inbox already drops a second delivery of one id (test_exactly_once)
    wait_until(lambda: applied(db, again["id"]), what="the replayed decision to be applied")
    assert sql(db, "SELECT count(*) FROM funding.agreement WHERE dossier_id = %s", dossier)[0][0] == 1
    assert sql(db, "SELECT count(*) FROM funding.outbox WHERE key = %s"
                   " AND type = 'funding.agreement_created'", aid)[0][0] == 1
    # A dossier not selected gets no agreement.
    other = str(uuid.uuid4())
    refused = decision_event(other, wave, outcome="phase2_not_selected")
    publish(db, refused)
    wait_until(lambda: applied(db, refused["id"]), what="the refusal to be applied")
    assert sql(db, "SELECT count(*) FROM funding.agreement WHERE dossier_id = %s", other)[0][0] == 0


def test_wave_parameters_come_from_wave_published(fund, officer, db, urls, keys):
    """A wave created in submission reaches funding; its agreements take its amount."""
    admin = bearer(keys.create("national_admin"))
    wave = new_wave()
    r = requests.post(f"{urls['submission']}/v1/waves", headers=admin, timeout=TIMEOUT,
                      json={"id": wave, "label": "Funding wave", "deposit_opens_at": "2030-01-01T00:00:00Z",
                            "phase2_slots": 4, "amount_per_laureate_cents": 8000001})
    assert r.status_code == 201, r.text
    wait_until(lambda: sql(db, "SELECT amount_per_laureate_cents FROM funding.wave_parameters"
                               " WHERE wave = %s", wave), what="funding's copy of the wave")
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave))
    doc, _ = get_agreement(fund, officer, agreement_of(db, dossier))
    assert doc["amount_cents"] == 8000001
    assert sorted(t["amount_cents"] for t in doc["tranches"]) == [4000000, 4000001]


def test_envelopes(fund, officer, dashboard, keys):
    wave = new_wave()
    r = requests.post(f"{fund}/v1/envelopes", headers=officer, timeout=TIMEOUT,
                      json={"wave": wave, "region": None, "amount_cents": "1500000.00"})
    assert conform(r, "/v1/envelopes", "post")["amount_cents"] == 150000000
    r = requests.post(f"{fund}/v1/envelopes", headers=officer, timeout=TIMEOUT,
                      json={"wave": wave, "region": None, "amount_cents": 1})
    conform(r, "/v1/envelopes", "post")
    assert r.status_code == 409
    r = requests.post(f"{fund}/v1/envelopes", headers=officer, timeout=TIMEOUT,
                      json={"wave": wave, "region": "05", "amount_cents": 1.5})
    body = conform(r, "/v1/envelopes", "post")
    assert r.status_code == 400 and {e["field"] for e in body["errors"]} == {"region", "amount_cents"}
    r = requests.get(f"{fund}/v1/envelopes", params={"wave": wave}, headers=dashboard, timeout=TIMEOUT)
    items = conform(r, "/v1/envelopes", "get")["items"]
    assert [(e["region"], e["remaining_cents"]) for e in items] == [(None, 150000000)]
    r = requests.post(f"{fund}/v1/envelopes", headers=dashboard, timeout=TIMEOUT,
                      json={"wave": wave, "region": "84", "amount_cents": 1})
    assert r.status_code == 403


def test_a_wave_of_envelopes_at_the_cap_sums_within_int64(fund, officer, dashboard):
    """The contract fuzzing opened two envelopes of 2^63-1 cents in one wave, and the wave's
    statistics answered 500: their total was no int64. An envelope is now capped, so the
    national envelope and the 18 regional ones at the cap still sum into an exact integer."""
    wave = new_wave()
    cap = 10 ** 15 - 1
    for region in [None] + sorted(REGIONS):
        r = requests.post(f"{fund}/v1/envelopes", headers=officer, timeout=TIMEOUT,
                          json={"wave": wave, "region": region, "amount_cents": cap})
        assert r.status_code == 201, r.text
    r = requests.post(f"{fund}/v1/envelopes", headers=officer, timeout=TIMEOUT,
                      json={"wave": new_wave(), "region": None, "amount_cents": "9999999999999.99"})
    assert conform(r, "/v1/envelopes", "post")["amount_cents"] == cap
    r = requests.get(f"{fund}/v1/stats/money", params={"wave": wave}, headers=dashboard,
                     timeout=TIMEOUT)
    doc = conform(r, "/v1/stats/money", "get")
    assert doc["envelope_cents"] == 19 * cap and doc["remaining_cents"] == 19 * cap, doc
    assert len(doc["by_region"]) == 18 and doc["by_region"]["84"]["envelope_cents"] == cap


def test_money_statistics_are_at_most_one_ttl_old(fund, officer, dashboard):
    """GET /v1/stats/money is served from memory for PTCE_STATS_MONEY_TTL_MS (1 s by default):
    a change shows once that time has passed, never later."""
    wave = new_wave()
    stats = lambda: requests.get(f"{fund}/v1/stats/money", params={"wave": wave},  # noqa: E731
                                 headers=dashboard, timeout=TIMEOUT).json()["envelope_cents"]
    open_envelope(fund, officer, wave, AMOUNT)
    assert stats() == AMOUNT
    open_envelope(fund, officer, wave, AMOUNT, region="84")
    changed = time.monotonic()
    wait_until(lambda: stats() == 2 * AMOUNT, timeout=10, interval=0.05, what="the new envelope")
    assert time.monotonic() - changed < 2.0


def test_bodies_are_closed_as_the_spec_says(fund, officer, db):
    """What the contract fuzzing found, pinned: the request bodies have additionalProperties:
    false, so an unknown member is named in `errors` (it was ignored, and a 65-bit integer in it
    answered as malformed JSON); amounts are within int64, without leading zeros; a report's
    entries are closed too; lengths count characters."""
    wave = new_wave()
    post = lambda path, body: requests.post(f"{fund}{path}", json=body, headers=officer,  # noqa: E731
                                            timeout=TIMEOUT)
    r = post("/v1/envelopes", {"wave": wave, "region": None, "amount_cents": 100, "J": 1})
    assert r.status_code == 400 and [e["field"] for e in r.json()["errors"]] == ["J"], r.text
    for amount in ("0", "006128.8", 2 ** 63, "1" * 17, 2 ** 63 - 1, 10 ** 15, "1" + "0" * 13):
        r = post("/v1/envelopes", {"wave": wave, "region": None, "amount_cents": amount})
        assert r.status_code == 400, (amount, r.text)
        assert r.headers["Content-Type"].startswith("application/problem+json"), r.text
    assert post("/v1/envelopes", {"wave": wave, "region": None, "amount_cents": 10 ** 15 - 1}
                ).status_code == 201
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave))
    aid = agreement_of(db, dossier)
    doc, etag = get_agreement(fund, officer, aid)
    assert doc["clauses"]["legal_basis"]
    r = requests.post(f"{fund}/v1/agreements/{aid}/signatures", json={"signer": "state", "x": 1},
                      headers={**officer, "If-Match": etag}, timeout=TIMEOUT)
    assert r.status_code == 400 and [e["field"] for e in r.json()["errors"]] == ["x"], r.text
    report = requests.get(f"{fund}/v1/agreements/{aid}/reports", headers=officer,
                          timeout=TIMEOUT).json()["items"][0]["id"]
    r = post(f"/v1/reports/{report}/submission",
             {"indicators": [{"code": "c", "baseline": 0, "target": 1, "value": 1, "extra": 2}]})
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["indicators[0].extra"], r.text
    r = requests.post(f"{fund}/v1/agreements/{aid}/reductions",
                      json={"amount_cents": 1, "motivation": "é" * 2000},
                      headers={**officer, "If-Match": etag}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text


def test_access_scope_and_dashboards(fund, officer, dashboard, keys, db):
    wave = new_wave()
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave, region="84"))
    aid = agreement_of(db, dossier)
    doc, _ = get_agreement(fund, officer, aid)
    tranche = doc["tranches"][0]["id"]
    other_region = bearer(keys.create("funding_officer", regions="11"))
    own_region = bearer(keys.create("funding_officer", regions="84"))
    partner = bearer(keys.create("partner"))
    for path in (f"/v1/agreements/{aid}", f"/v1/agreements/{aid}/versions",
                 f"/v1/agreements/{aid}/reports"):
        assert requests.get(fund + path, headers=other_region, timeout=TIMEOUT).status_code == 404
        assert requests.get(fund + path, headers=dashboard, timeout=TIMEOUT).status_code == 404
        assert requests.get(fund + path, headers=own_region, timeout=TIMEOUT).status_code == 200
        assert requests.get(fund + path, headers=partner, timeout=TIMEOUT).status_code == 403
    assert pay(fund, other_region, tranche).status_code == 404
    assert pay(fund, dashboard, tranche).status_code == 404
    listed = requests.get(f"{fund}/v1/agreements", params={"wave": wave}, headers=other_region,
                          timeout=TIMEOUT).json()["items"]
    assert listed == []
    r = requests.get(f"{fund}/v1/agreements", params={"wave": wave, "limit": 1}, headers=own_region,
                     timeout=TIMEOUT)
    page = conform(r, "/v1/agreements", "get")
    assert [a["id"] for a in page["items"]] == [aid]
    assert requests.get(f"{fund}/v1/agreements", headers=dashboard, timeout=TIMEOUT).status_code == 404
    r = requests.get(f"{fund}/v1/agreements", params={"wave": wave, "cursor": page["next_cursor"]},
                     headers=own_region, timeout=TIMEOUT)
    assert conform(r, "/v1/agreements", "get")["items"] == []
    r = requests.get(f"{fund}/v1/agreements", params={"state": "lost", "cursor": "x", "limit": 0},
                     headers=own_region, timeout=TIMEOUT)
    body = conform(r, "/v1/agreements", "get")
    assert r.status_code == 400 and {e["field"] for e in body["errors"]} == {"state", "cursor", "limit"}
    r = requests.get(f"{fund}/v1/stats/money", params={"wave": wave}, headers=dashboard, timeout=TIMEOUT)
    assert conform(r, "/v1/stats/money", "get")["agreements"] == 1
    r = requests.get(f"{fund}/v1/stats/money", headers=dashboard, timeout=TIMEOUT)
    conform(r, "/v1/stats/money", "get")
    assert r.status_code == 400


def test_reductions_cancellations_recoveries(fund, officer, db):
    wave = new_wave()
    open_envelope(fund, officer, wave, 2 * AMOUNT)
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave))
    aid = agreement_of(db, dossier)
    sign(fund, officer, aid, "carrier")
    doc = sign(fund, officer, aid, "state").json()
    first, second = doc["tranches"]
    assert pay(fund, officer, first["id"]).status_code == 200

    # A partial reduction takes from the unpaid tranche; more than is unpaid is refused.
    _, etag = get_agreement(fund, officer, aid)
    r = requests.post(f"{fund}/v1/agreements/{aid}/reductions", headers={**officer, "If-Match": etag},
                      json={"amount_cents": AMOUNT, "motivation": "trop"}, timeout=TIMEOUT)
    conform(r, "/v1/agreements/{id}/reductions", "post")
    assert r.status_code == 422
    r = requests.post(f"{fund}/v1/agreements/{aid}/reductions", headers={**officer, "If-Match": etag},
                      json={"amount_cents": 1000000, "motivation": "Dépenses moindres"}, timeout=TIMEOUT)
    doc = conform(r, "/v1/agreements/{id}/reductions", "post")
    assert r.status_code == 201 and doc["amount_cents"] == AMOUNT - 1000000
    assert doc["tranches"][1]["amount_cents"] == AMOUNT // 2 - 1000000
    r = requests.post(f"{fund}/v1/agreements/{aid}/reductions", headers={**officer, "If-Match": etag},
                      json={"amount_cents": 1, "motivation": "stale"}, timeout=TIMEOUT)
    assert r.status_code == 412

    # A recovery of unspent money on the paid tranche frees it in the envelope.
    r = requests.post(f"{fund}/v1/tranches/{first['id']}/recoveries", headers=officer, timeout=TIMEOUT,
                      json={"amount_cents": 250000, "reference": "OR-2027-4"})
    assert conform(r, "/v1/tranches/{id}/recoveries", "post")["recovered_cents"] == 250000
    r = requests.post(f"{fund}/v1/tranches/{first['id']}/recoveries", headers=officer, timeout=TIMEOUT,
                      json={"amount_cents": AMOUNT, "reference": "OR-2027-5"})
    assert r.status_code == 422
    # The unpaid tranche cancelled.
    r = requests.post(f"{fund}/v1/tranches/{second['id']}/cancellation", headers=officer,
                      json={"motivation": "Projet arrêté"}, timeout=TIMEOUT)
    assert conform(r, "/v1/tranches/{id}/cancellation", "post")["state"] == "cancelled"
    assert pay(fund, officer, second["id"]).status_code == 409
    doc, _ = get_agreement(fund, officer, aid)
    assert doc["amount_cents"] == AMOUNT // 2
    assert (doc["committed_cents"], doc["paid_cents"]) == (AMOUNT // 2 - 250000, AMOUNT // 2 - 250000)
    env = sql(db, "SELECT committed_cents, paid_cents FROM funding.envelope WHERE wave = %s", wave)
    assert env == [(AMOUNT // 2 - 250000, AMOUNT // 2 - 250000)]
    kinds = sql(db, "SELECT kind FROM funding.ledger WHERE agreement_id = %s ORDER BY seq", aid)
    assert [k for (k,) in kinds] == ["commitment", "payment", "reduction", "recovery", "reduction"]
    assert ledger_problems(db) == []


def test_reports_overdue_and_rejected(fund, officer, db):
    wave = new_wave()
    dossier = str(uuid.uuid4())
    ev = decision_event(dossier, wave)
    ev["data"]["decided_at"] = "2020-01-15T10:00:00.000Z"  # its year-1 reports were due in 2021
    publish(db, ev)
    aid = agreement_of(db, dossier)
    r = requests.get(f"{fund}/v1/reports/overdue", headers=officer, timeout=TIMEOUT)
    overdue = [x for x in conform(r, "/v1/reports/overdue", "get")["items"] if x["agreement_id"] == aid]
    assert sorted((x["year"], x["kind"]) for x in overdue) == \
        [(1, "financial"), (1, "progress"), (2, "financial"), (2, "progress")]
    assert overdue[0]["due_on"] == "2021-07-15"
    rep = next(x for x in overdue if x["year"] == 1 and x["kind"] == "progress")
    fin = next(x for x in overdue if x["year"] == 1 and x["kind"] == "financial")
    # Well-formed reports that the catalogue (data) or the report's kind refuse: 422, unchanged.
    refused = [
        (rep, {"indicators": [{"code": "no_such_sensor", "baseline": 0, "target": 1, "value": 1}]},
         'the indicator "no_such_sensor" is not in the catalogue (GET /v1/reports/catalogue)'),
        (rep, {"indicators": [{"code": "", "baseline": 0, "target": 0, "value": 0}]},
         'the indicator "" is not in the catalogue (GET /v1/reports/catalogue)'),
        (fin, {"lines": [{"heading": "64", "actual_cents": 1}, {"heading": "99", "actual_cents": 1}]},
         'the CERFA heading "99" is not in the catalogue (GET /v1/reports/catalogue)'),
        (rep, {"lines": [{"heading": "64", "actual_cents": 1}]},
         f"report {rep['id']} is a progress report: its body lists indicators"),
        (fin, {"indicators": [{"code": "members", "baseline": 0, "target": 1, "value": 1}]},
         f"report {fin['id']} is a financial report: its body lists lines"),
    ]
    for report, body, detail in refused:
        r = requests.post(f"{fund}/v1/reports/{report['id']}/submission", headers=officer,
                          json=body, timeout=TIMEOUT)
        problem = conform(r, "/v1/reports/{id}/submission", "post")
        assert r.status_code == 422 and problem["detail"] == detail, (body, r.text)
    r = requests.get(f"{fund}/v1/agreements/{aid}/reports", headers=officer, timeout=TIMEOUT)
    assert {x["state"] for x in r.json()["items"]} == {"expected"}
    r = requests.post(f"{fund}/v1/reports/{rep['id']}/submission", headers=officer, timeout=TIMEOUT,
                      json={"indicators": [{"code": "jobs_created", "value": 3}]})  # no baseline
    assert r.status_code == 400
    r = requests.post(f"{fund}/v1/reports/{rep['id']}/submission", headers=officer, timeout=TIMEOUT,
                      json={"indicators": [{"code": "jobs_created", "baseline": 0, "target": 5,
                                            "value": 3}]})
    assert conform(r, "/v1/reports/{id}/submission", "post")["state"] == "submitted"
    r = requests.post(f"{fund}/v1/reports/{rep['id']}/review", headers=officer, timeout=TIMEOUT,
                      json={"decision": "rejected"})
    assert r.status_code == 400
    r = requests.post(f"{fund}/v1/reports/{rep['id']}/review", headers=officer, timeout=TIMEOUT,
                      json={"decision": "rejected", "reason": "Indicateurs incomplets"})
    doc = conform(r, "/v1/reports/{id}/review", "post")
    assert doc["state"] == "rejected" and doc["reason"] == "Indicateurs incomplets" and doc["overdue"]
    r = requests.get(f"{fund}/v1/reports/catalogue", headers=officer, timeout=TIMEOUT)
    cat = conform(r, "/v1/reports/catalogue", "get")
    assert "jobs_created" in {i["code"] for i in cat["indicators"]}
    assert {"64", "74"} <= {h["code"] for h in cat["cerfa_15059"]}


def test_refused_signatures_and_year3_beyond_the_envelope(fund, officer, db):
    # No envelope for the wave: the State's signature is refused and nothing is committed.
    wave = new_wave()
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave))
    aid = agreement_of(db, dossier)
    assert sign(fund, officer, aid, "carrier").status_code == 200
    r = sign(fund, officer, aid, "state")
    conform(r, "/v1/agreements/{id}/signatures", "post")
    assert r.status_code == 409 and "no envelope" in r.json()["detail"]
    doc, _ = get_agreement(fund, officer, aid)
    assert (doc["state"], doc["committed_cents"], doc["signatures"][0]["signer"]) == \
        ("carrier_signed", 0, "carrier")
    assert sql(db, "SELECT count(*) FROM funding.ledger WHERE agreement_id = %s", aid)[0][0] == 0

    # A beneficiary without a SIRET: the State does not sign.
    open_envelope(fund, officer, wave, AMOUNT)
    anonymous = str(uuid.uuid4())
    publish(db, decision_event(anonymous, wave, siret=None))
    other = agreement_of(db, anonymous)
    assert sign(fund, officer, other, "carrier").status_code == 200
    r = sign(fund, officer, other, "state")
    conform(r, "/v1/agreements/{id}/signatures", "post")
    assert r.status_code == 422

    # The envelope holds exactly one agreement: the year-3 aid finds nothing left.
    doc = sign(fund, officer, aid, "state").json()
    assert doc["state"] == "signed"
    assert pay(fund, officer, doc["tranches"][0]["id"]).status_code == 200
    approve_year(fund, officer, aid, 1)
    assert pay(fund, officer, doc["tranches"][1]["id"]).status_code == 200
    approve_year(fund, officer, aid, 2)
    _, etag = get_agreement(fund, officer, aid)
    r = requests.post(f"{fund}/v1/agreements/{aid}/year3", headers={**officer, "If-Match": etag},
                      json={"decision": "granted", "amount_cents": 1}, timeout=TIMEOUT)
    assert r.status_code == 409 and "0 cents left" in r.json()["detail"]
    # The largest amount the schema allows is beyond every envelope: 409 too, not an overflow.
    r = requests.post(f"{fund}/v1/agreements/{aid}/year3", headers={**officer, "If-Match": etag},
                      json={"decision": "granted", "amount_cents": 2 ** 63 - 1}, timeout=TIMEOUT)
    conform(r, "/v1/agreements/{id}/year3", "post")
    assert r.status_code == 409 and "0 cents left" in r.json()["detail"], r.text
    # FundingYear3Input's rules: a grant has an amount, a refusal none and a motivation.
    for body, field in (({"decision": "declined"}, "motivation"),
                        ({"decision": "declined", "motivation": ""}, "motivation"),
                        ({"decision": "declined", "motivation": "m", "amount_cents": 1}, "amount_cents"),
                        ({"decision": "granted"}, "amount_cents"),
                        ({"decision": "granted", "amount_cents": None}, "amount_cents")):
        r = requests.post(f"{fund}/v1/agreements/{aid}/year3", headers={**officer, "If-Match": etag},
                          json=body, timeout=TIMEOUT)
        problem = conform(r, "/v1/agreements/{id}/year3", "post")
        assert r.status_code == 400 and [e["field"] for e in problem["errors"]] == [field], r.text
    r = requests.post(f"{fund}/v1/agreements/{aid}/year3", headers={**officer, "If-Match": etag},
                      json={"decision": "declined", "motivation": "Enveloppe épuisée"}, timeout=TIMEOUT)
    doc = conform(r, "/v1/agreements/{id}/year3", "post")
    assert r.status_code == 201 and doc["state"] == "closed" and doc["year3"]["amount_cents"] == 0
    declined = [ev for t, ev in events_of(db, aid) if t == "funding.year3_decided"]
    assert len(declined) == 1 and declined[0]["data"]["decision"] == "declined"
    check_event(declined[0], "funding.year3_decided")
    assert ledger_problems(db) == []


def test_signatures_sent_together_draw_on_their_regions_envelope(fund, officer, db):
    """The State's signatures of one wave sent at once, as one batch reads its envelopes: a region
    with an envelope of its own draws on it, the others on the national one, and a wave with no
    envelope is refused."""
    wave, bare = new_wave(), new_wave()
    own = open_envelope(fund, officer, wave, 5 * AMOUNT, region="11")
    national = open_envelope(fund, officer, wave, 5 * AMOUNT)
    regions = ["11", "84", "11", "93", "84"]
    dossiers = [str(uuid.uuid4()) for _ in range(len(regions) + 1)]
    publish(db, *[decision_event(d, wave, region=r, siret=SIRETS[i])
                  for i, (d, r) in enumerate(zip(dossiers, regions))],
            decision_event(dossiers[-1], bare, region="11", siret=SIRETS[0]))
    aids = [agreement_of(db, d) for d in dossiers]
    for aid in aids:
        assert sign(fund, officer, aid, "carrier").status_code == 200
    answers = [None] * len(aids)
    barrier = threading.Barrier(len(aids))

    def commit(i):
        barrier.wait()
        answers[i] = sign(fund, officer, aids[i], "state", etag='"v2"')

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(aids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [r.status_code for r in answers] == [200] * len(regions) + [409], \
        [r.text for r in answers]
    assert answers[-1].json()["detail"] == f"no envelope for wave {bare}: one must be opened first"
    drawn = dict(sql(db, "SELECT id::text, envelope_id::text FROM funding.agreement WHERE wave = %s",
                     wave))
    assert [drawn[a] for a in aids[:-1]] == \
        [own["id"] if r == "11" else national["id"] for r in regions]
    assert sql(db, "SELECT region, committed_cents FROM funding.envelope WHERE wave = %s"
                   " ORDER BY region NULLS LAST", wave) == [("11", 2 * AMOUNT), (None, 3 * AMOUNT)]
    assert ledger_problems(db) == []


def test_signatures_and_payments_sent_together_answer_as_alone(fund, officer, db, keys):
    """Signatures and payments arriving at once are applied in batches (money_batch.h); each
    still gets the answer it would have had alone, whichever batch and round it falls in: the
    State's signature twice (200, then 412 with the new ETag), a payment twice (200, then 409),
    the carrier's signature by a key of its region (200), the State's on a draft (409 naming what it may become), a
    key of another region (404), a tranche that does not exist (404)."""
    wave = new_wave()
    open_envelope(fund, officer, wave, 10 * AMOUNT)
    dossiers = [str(uuid.uuid4()) for _ in range(4)]
    publish(db, *[decision_event(d, wave, region="84", siret=SIRETS[0]) for d in dossiers])
    a_state, a_pay, a_carrier, a_draft = [agreement_of(db, d) for d in dossiers]
    for aid in (a_state, a_pay):
        assert sign(fund, officer, aid, "carrier").status_code == 200
    r = sign(fund, officer, a_pay, "state")
    assert r.status_code == 200, r.text
    due = r.json()["tranches"][0]["id"]
    regional = bearer(keys.create("funding_officer", regions="11"))
    in_scope = bearer(keys.create("funding_officer", regions="11,84"))
    calls = [("state", a_state, officer, '"v2"'), ("state", a_state, officer, '"v2"'),
             ("pay", due, officer, None), ("pay", due, officer, None),
             ("carrier", a_carrier, in_scope, '"v1"'), ("state", a_draft, officer, '"v1"'),
             ("state", a_state, regional, '"v2"'), ("pay", str(uuid.uuid4()), officer, None)]
    answers = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def call(i, what, rid, headers, etag):
        barrier.wait()
        answers[i] = pay(fund, headers, rid, f"VIR-{i}") if what == "pay" \
            else sign(fund, headers, rid, what, etag=etag)

    threads = [threading.Thread(target=call, args=(i, *c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    codes = [r.status_code for r in answers]
    assert sorted(codes[:2]) == [200, 412] and sorted(codes[2:4]) == [200, 409], codes
    assert codes[4:] == [200, 409, 404, 404], [r.text for r in answers]
    signed = next(r for r in answers[:2] if r.status_code == 200)
    assert conform(signed, "/v1/agreements/{id}/signatures", "post")["state"] == "signed"
    assert signed.headers["ETag"] == '"v3"'
    stale = next(r for r in answers[:2] if r.status_code == 412)
    assert stale.json()["detail"] == 'the agreement is at version 3 (ETag "v3")'
    paid = next(r for r in answers[2:4] if r.status_code == 200)
    assert conform(paid, "/v1/tranches/{id}/payments", "post")["state"] == "paid"
    twice = next(r for r in answers[2:4] if r.status_code == 409)
    assert twice.json()["detail"].startswith(f"tranche {due} was already paid on 2026-03-01")
    assert answers[4].json()["state"] == "carrier_signed" and answers[4].headers["ETag"] == '"v2"'
    assert answers[5].json()["detail"] == \
        "the agreement is draft; from there it may go to: carrier_signed"
    assert answers[6].json()["detail"] == f"no agreement {a_state}"
    assert answers[7].json()["detail"] == f"no tranche {calls[7][1]}"
    assert ledger_problems(db) == []
    published = [t for t, _ in events_of(db, a_state)]
    assert published.count("funding.agreement_signed") == 2  # the carrier's, the State's
    assert published.count("funding.tranche_due") == 1
    paid_events = [ev for t, ev in events_of(db, a_pay) if t == "funding.tranche_paid"]
    assert len(paid_events) == 1
    for t, ev in events_of(db, a_state) + events_of(db, a_pay):
        check_event(ev, t)
    assert sql(db, "SELECT state, version FROM funding.agreement WHERE id = %s", a_pay) == \
        [("active", 4)]


def test_a_batch_refused_as_a_whole_answers_each_payment_alone(fund, officer, db, admin_url):
    """A batch the database refuses as a whole is run again one operation at a time: the
    payment that fails gets its 500 alone, the others are paid. Both writers are held on
    agreement locks the test takes, so that the next four payments queue into one batch; a
    trigger makes the poisoned one's UPDATE fail (money_batch.c)."""
    wave = new_wave()
    open_envelope(fund, officer, wave, 10 * AMOUNT)
    dossiers = [str(uuid.uuid4()) for _ in range(6)]
    publish(db, *[decision_event(d, wave, region="84", siret=SIRETS[0]) for d in dossiers])
    agreements = [agreement_of(db, d) for d in dossiers]
    tranches = []
    for aid in agreements:
        assert sign(fund, officer, aid, "carrier").status_code == 200
        r = sign(fund, officer, aid, "state")
        assert r.status_code == 200, r.text
        tranches.append(r.json()["tranches"][0]["id"])
    poison = f"POISON-{uuid.uuid4().hex[:8]}"
    sql(db, "CREATE OR REPLACE FUNCTION funding.test_poison() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN IF NEW.reference LIKE 'POISON-%%' THEN"
            " RAISE EXCEPTION 'poisoned payment'; END IF; RETURN NEW; END $$")
    sql(db, "CREATE TRIGGER test_poison BEFORE UPDATE ON funding.tranche FOR EACH ROW"
            " EXECUTE FUNCTION funding.test_poison()")
    answers = {}

    def call(i, ref):
        answers[i] = pay(fund, officer, tranches[i], ref)
    try:
        with psycopg.connect(admin_url) as holder:
            sql(holder, "SELECT 1 FROM funding.agreement WHERE id = ANY(%s::uuid[]) FOR UPDATE",
                agreements[:2])
            held = [threading.Thread(target=call, args=(i, f"VIR-{i}")) for i in (0, 1)]
            for n, t in enumerate(held, 1):  # one at a time: each in a batch of its own
                t.start()
                wait_until(lambda: sql(db, "SELECT count(*) FROM pg_stat_activity WHERE"
                                           " wait_event_type = 'Lock' AND usename = 'ptce_funding'")
                           [0][0] >= n, timeout=10, what=f"{n} writer(s) held by the test's locks")
            queued = [threading.Thread(target=call, args=(i, poison if i == 3 else f"VIR-{i}"))
                      for i in range(2, 6)]
            for t in queued:
                t.start()
            time.sleep(1)  # the four are queued behind the held writers
            holder.rollback()
        for t in held + queued:
            t.join(timeout=60)
    finally:
        sql(db, "DROP TRIGGER IF EXISTS test_poison ON funding.tranche")
        sql(db, "DROP FUNCTION IF EXISTS funding.test_poison()")
    codes = {i: r.status_code for i, r in answers.items()}
    assert codes == {0: 200, 1: 200, 2: 200, 3: 500, 4: 200, 5: 200}, \
        {i: r.text for i, r in answers.items()}
    paid = sql(db, "SELECT id::text FROM funding.tranche WHERE state = 'paid' AND"
                   " id = ANY(%s::uuid[])", tranches)
    assert sorted(p[0] for p in paid) == sorted(t for i, t in enumerate(tranches) if i != 3)
    assert ledger_problems(db) == []
