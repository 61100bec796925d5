"""Funding's creating POSTs and Idempotency-Key (common/idempotency.c, through funding's idem.c).

The same key with the same request replays the first answer (Idempotent-Replayed: true) and
changes nothing; the same key with another body, or on another resource, is 422; twins sent at
once make one effect, the others replay it or are told it is still in flight (409). Without a
key these routes behave as before (enrolments alone require one).
"""
import threading
import uuid

import pytest
import requests

from conftest import bearer, sql
from funding_helpers import (SIRETS, TIMEOUT, agreement_of, decision_event, new_wave,
                             open_envelope, publish, sign)
from test_funding_support import key_id, laureates
from test_funding_support import action_body, signature
from test_openapi_conformance import conform


@pytest.fixture(scope="module")
def fund(urls):
    return urls["funding"]


@pytest.fixture(scope="module")
def officer(keys):
    return bearer(keys.create("funding_officer"))


def post(url, headers, body, key):
    return requests.post(url, json=body, headers={**headers, "Idempotency-Key": key},
                         timeout=TIMEOUT)


def twins(n, call):
    """n calls of call() at once; their responses."""
    barrier, out = threading.Barrier(n), []

    def one():
        barrier.wait()
        out.append(call())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def replays_and_refuses(url, headers, body, other_body, code):
    """The first answer, its replay, and 422 for another body; returns the first answer."""
    key = str(uuid.uuid4())
    first = post(url, headers, body, key)
    assert first.status_code == code, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = post(url, headers, body, key)
    assert again.status_code == code and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    other = post(url, headers, other_body, key)
    assert other.status_code == 422, other.text
    assert other.headers["Content-Type"].startswith("application/problem+json")
    return first, key


def signed_agreement(fund, officer, db):
    wave = new_wave()
    open_envelope(fund, officer, wave, 10 * 10000000)
    dossier = str(uuid.uuid4())
    publish(db, decision_event(dossier, wave, siret=SIRETS[1]))
    aid = agreement_of(db, dossier)
    assert sign(fund, officer, aid, "carrier").status_code == 200
    r = sign(fund, officer, aid, "state")
    assert r.status_code == 200, r.text
    return aid, r.json()


def test_a_payment_is_recorded_once(fund, officer, db):
    aid, doc = signed_agreement(fund, officer, db)
    tranche = doc["tranches"][0]["id"]
    url = f"{fund}/v1/tranches/{tranche}/payments"
    body = {"reference": "VIR-IDEM-1", "paid_on": "2026-03-01"}
    first, key = replays_and_refuses(url, officer, body, {**body, "reference": "VIR-IDEM-2"}, 200)
    assert conform(first, "/v1/tranches/{id}/payments", "post")["state"] == "paid"
    assert sql(db, "SELECT count(*) FROM funding.ledger WHERE tranche_id = %s",
               tranche)[0][0] == 1
    # The same key and body on another tranche is another request.
    second = doc["tranches"][1]["id"]
    r = post(f"{fund}/v1/tranches/{second}/payments", officer, body, key)
    assert r.status_code == 422, r.text
    # Without a key a retry is what it always was: the tranche is paid already.
    r = requests.post(url, json=body, headers=officer, timeout=TIMEOUT)
    assert r.status_code == 409
    r = post(url, officer, body, "")
    assert r.status_code == 400


def test_concurrent_payments_with_one_key_pay_once(fund, officer, db):
    _, doc = signed_agreement(fund, officer, db)
    tranche = doc["tranches"][0]["id"]
    key, body = str(uuid.uuid4()), {"reference": "VIR-TWIN", "paid_on": "2026-03-02"}
    out = twins(6, lambda: post(f"{fund}/v1/tranches/{tranche}/payments", officer, body, key))
    codes = sorted(r.status_code for r in out)
    fresh = [r for r in out if r.status_code == 200 and "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1 and set(codes) <= {200, 409}, codes
    assert all(r.json() == fresh[0].json() for r in out if r.status_code == 200)
    assert sql(db, "SELECT count(*) FROM funding.ledger WHERE tranche_id = %s",
               tranche)[0][0] == 1


def test_a_report_is_submitted_once(fund, officer, db):
    aid, _ = signed_agreement(fund, officer, db)
    r = requests.get(f"{fund}/v1/agreements/{aid}/reports", headers=officer, timeout=TIMEOUT)
    report = [p for p in r.json()["items"] if p["kind"] == "progress"][0]
    body = {"indicators": [{"code": "members", "baseline": 10, "target": 20, "value": 14}]}
    other = {"indicators": [{"code": "members", "baseline": 10, "target": 20, "value": 15}]}
    first, _ = replays_and_refuses(f"{fund}/v1/reports/{report['id']}/submission", officer, body,
                                   other, 200)
    assert conform(first, "/v1/reports/{id}/submission", "post")["state"] == "submitted"


def test_an_envelope_is_opened_once(fund, officer, db):
    wave = new_wave()
    body = {"wave": wave, "region": "84", "amount_cents": 5000000}
    first, _ = replays_and_refuses(f"{fund}/v1/envelopes", officer, body,
                                   {**body, "amount_cents": 6000000}, 201)
    conform(first, "/v1/envelopes", "post")
    assert sql(db, "SELECT count(*) FROM funding.envelope WHERE wave = %s", wave)[0][0] == 1


def test_a_charter_signature_is_recorded_once(fund, keys):
    admin = bearer(keys.create("national_admin"))
    body = signature()
    first, _ = replays_and_refuses(f"{fund}/v1/charter/signatures", admin, body,
                                   {**body, "organisation": "Coop du Mont"}, 201)
    conform(first, "/v1/charter/signatures", "post")
    r = requests.get(f"{fund}/v1/charter/signatories",
                     params={"charter_version": body["charter_version"]}, timeout=TIMEOUT)
    assert [s["id"] for s in r.json()["items"]] == [first.json()["id"]]


def test_concurrent_enrolments_with_one_key_enrol_once(fund, keys, db):
    admin = bearer(keys.create("national_admin"))
    token = keys.create("partner", regions="84")
    partner = bearer(token)
    (dossier,) = laureates(db, 1)
    r = requests.post(f"{fund}/v1/support/actions", headers=admin, timeout=TIMEOUT,
                      json=action_body(capacity=3, partner_key_id=key_id(token)))
    action = r.json()["id"]
    key, body = str(uuid.uuid4()), {"action_id": action, "dossier_id": dossier}
    out = twins(8, lambda: post(f"{fund}/v1/support/enrolments", partner, body, key))
    codes = sorted(r.status_code for r in out)
    fresh = [r for r in out if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1 and set(codes) <= {201, 409}, codes
    for r in out:
        if r.status_code == 409:  # the twin still in flight, not "already enrolled"
            assert "still being answered" in r.json()["detail"], r.text
    assert sql(db, "SELECT enrolled FROM funding.support_action WHERE id = %s",
               action)[0][0] == 1
    replay = post(f"{fund}/v1/support/enrolments", partner, body, key)
    assert replay.status_code == 201 and replay.headers["ETag"] == fresh[0].headers["ETag"]
    assert replay.headers["Location"] == fresh[0].headers["Location"]
    assert sql(db, "SELECT response_status FROM funding.idempotency_request"
                   " WHERE key_id = %s AND key = %s", key_id(token), key) == [(201,)]
