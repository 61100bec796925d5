"""The bouquet of services and the PTCE charter, end to end (services/funding/support*.c).

Decisions reach funding as instruction will publish them: a dossier.decided CloudEvent is
committed into instruction.outbox as the database owner, instruction's relay publishes it, and
funding's inbox applies it. Checked here: a phase-1 laureate gets access exactly once (a
replayed or repeated decision changes nothing) and support.access_granted matches
api-spec/asyncapi.yaml; refused and closed dossiers get nothing; access survives a phase-2
refusal; a partner sees only the PTCE of its regions (404 otherwise); concurrent enrolments never
pass an action's capacity; deliveries need If-Match; charter signatures are validated and their
list is public.
"""
import datetime
import json
import threading
import uuid

import pytest
import requests

from conftest import bearer, sql, wait_until
from test_openapi_conformance import check_event, conform

TOPIC = "ptce.instruction.events"
TIMEOUT = 15


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def decision(dossier_id, outcome, region="84", phase=1, event_type="dossier.decided"):
    """A decision event as instruction will write it (asyncapi.yaml, DecisionData)."""
    eid = str(uuid.uuid4())
    data = {
        "dossier_id": dossier_id, "wave": "2026", "region": region, "phase": phase,
        "outcome": outcome,
        "motivation": None if outcome in ("phase1_laureate", "phase2_laureate") else "hors champ",
        "reference": "CNA-2026-07-03/12", "decided_at": now_rfc3339(),
        "decided_by": "0123456789abcdef", "version": 3, "ptce_name": f"Pôle {dossier_id[:8]}",
        "beneficiary": {"siret": "73282932000074", "name": "Pôle du Val"},
    }
    return {"specversion": "1.0", "id": eid, "source": "/ptce/instruction", "type": event_type,
            "subject": dossier_id, "time": now_rfc3339(), "datacontenttype": "application/json",
            "data": data}


def publish(db, *events, replay=False):
    """Commits the events into instruction's outbox, in order, in one transaction. With replay,
    the rows get fresh outbox ids while the payloads keep their CloudEvent ids, so Kafka carries
    the same event a second time, as after a relay crash."""
    with db.transaction():
        for ev in events:
            sql(db, "INSERT INTO instruction.outbox (event_id, topic, key, type, payload)"
                    " VALUES (%s, %s, %s, %s, %s)",
                str(uuid.uuid4()) if replay else ev["id"], TOPIC, ev["subject"], ev["type"],
                json.dumps(ev))


def applied(db, *events):
    """Waits until funding's inbox holds every event."""
    ids = [ev["id"] for ev in events]
    wait_until(lambda: sql(db, "SELECT count(*) FROM funding.inbox WHERE event_id = ANY(%s::uuid[])",
                           ids)[0][0] == len(ids), what="funding to apply the decisions")


def laureates(db, n, region="84"):
    """n fresh phase-1 laureates of region, granted access; returns their dossier ids."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    events = [decision(i, "phase1_laureate", region) for i in ids]
    publish(db, *events)
    applied(db, *events)
    return ids


def key_id(token):
    return token.split("_")[1]


@pytest.fixture(scope="module")
def fund(urls):
    return urls["funding"]


@pytest.fixture(scope="module")
def admin(keys):
    return bearer(keys.create("national_admin"))


@pytest.fixture(scope="module")
def partner_token(keys):
    return keys.create("partner", regions="84")


@pytest.fixture(scope="module")
def partner(partner_token):
    return bearer(partner_token)


def action_body(**changes):
    today = datetime.date.today()
    body = {"title": "Atelier modèle économique", "partner_organisation": "France Active",
            "format": "collective", "capacity": 5, "starts_on": today.isoformat(),
            "ends_on": (today + datetime.timedelta(days=365)).isoformat()}
    body.update(changes)
    return body


def new_action(fund, admin, **changes):
    r = requests.post(f"{fund}/v1/support/actions", json=action_body(**changes), headers=admin,
                      timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    conform(r, "/v1/support/actions", "post")
    return r.json()


def enrol(fund, headers, action_id, dossier_id, key=None):
    return requests.post(f"{fund}/v1/support/enrolments",
                         json={"action_id": action_id, "dossier_id": dossier_id},
                         headers={**headers, "Idempotency-Key": key or str(uuid.uuid4())},
                         timeout=TIMEOUT)


# ---- access from dossier.decided ----

def test_laureate_gets_access_once_and_the_event_matches_the_spec(db, fund, admin):
    dossier = str(uuid.uuid4())
    first = decision(dossier, "phase1_laureate")
    check_event(first, "dossier.decided")  # the test publishes what the spec says
    again = decision(dossier, "phase1_laureate")  # a second decision event for the same dossier
    publish(db, first)
    publish(db, first, replay=True)  # the same event twice, as a relay may publish it
    publish(db, again)
    applied(db, first, again)
    assert sql(db, "SELECT count(*) FROM funding.support_access WHERE dossier_id = %s",
               dossier)[0][0] == 1
    rows = sql(db, "SELECT payload FROM funding.outbox WHERE type = 'support.access_granted'"
                   " AND key = %s", dossier)
    assert len(rows) == 1, rows
    event = json.loads(rows[0][0])
    check_event(event, "support.access_granted")
    assert event["subject"] == dossier and event["data"]["dossier_id"] == dossier
    assert event["data"]["region"] == "84"
    wait_until(lambda: sql(db, "SELECT sent_at IS NOT NULL FROM funding.outbox"
                               " WHERE type = 'support.access_granted' AND key = %s", dossier)[0][0],
               what="funding's relay to publish support.access_granted")
    r = requests.get(f"{fund}/v1/support/beneficiaries/{dossier}", headers=admin, timeout=TIMEOUT)
    assert conform(r, "/v1/support/beneficiaries/{dossier_id}", "get")["dossier_id"] == dossier


@pytest.mark.parametrize("outcome", ["refused", "closed"])
def test_refused_or_closed_gets_no_access(db, fund, admin, outcome):
    dossier = str(uuid.uuid4())
    ev = decision(dossier, outcome)
    publish(db, ev)
    applied(db, ev)
    assert sql(db, "SELECT count(*) FROM funding.support_access WHERE dossier_id = %s",
               dossier)[0][0] == 0
    assert sql(db, "SELECT count(*) FROM funding.outbox WHERE key = %s", dossier)[0][0] == 0
    r = requests.get(f"{fund}/v1/support/beneficiaries/{dossier}", headers=admin, timeout=TIMEOUT)
    assert r.status_code == 404


def test_access_is_kept_after_a_phase2_refusal(db):
    (dossier,) = laureates(db, 1)
    refusal = decision(dossier, "phase2_not_selected", phase=2, event_type="dossier.phase2_decided")
    check_event(refusal, "dossier.phase2_decided")
    publish(db, refusal)
    applied(db, refusal)
    assert sql(db, "SELECT count(*) FROM funding.support_access WHERE dossier_id = %s",
               dossier)[0][0] == 1


def test_malformed_decision_is_set_aside(db):
    ev = decision(str(uuid.uuid4()), "phase1_laureate")
    ev["data"]["phase"] = 2  # dossier.decided is phase 1 only
    publish(db, ev)
    wait_until(lambda: sql(db, "SELECT count(*) FROM funding.inbox_dead_letter"
                               " WHERE payload LIKE %s", f"%{ev['id']}%")[0][0] == 1,
               what="the malformed decision in funding's dead letters")
    assert sql(db, "SELECT count(*) FROM funding.support_access WHERE dossier_id = %s",
               ev["subject"])[0][0] == 0


# ---- partners: scope, enrolments, deliveries ----

def test_partner_sees_only_the_ptce_it_may_serve(db, fund, admin, partner):
    (mine,) = laureates(db, 1, region="84")
    (other,) = laureates(db, 1, region="11")
    r = requests.get(f"{fund}/v1/support/beneficiaries/{other}", headers=partner, timeout=TIMEOUT)
    assert r.status_code == 404
    conform(r, "/v1/support/beneficiaries/{dossier_id}", "get")
    r = requests.get(f"{fund}/v1/support/beneficiaries/{mine}", headers=partner, timeout=TIMEOUT)
    assert r.status_code == 200
    seen, cursor = set(), None
    while True:  # every page, following next_cursor
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        r = requests.get(f"{fund}/v1/support/beneficiaries", params=params, headers=partner,
                         timeout=TIMEOUT)
        page = conform(r, "/v1/support/beneficiaries", "get")
        assert {b["region"] for b in page["items"]} <= {"84"}
        seen |= {b["dossier_id"] for b in page["items"]}
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert mine in seen and other not in seen
    action = new_action(fund, admin)
    r = enrol(fund, partner, action["id"], other)
    assert r.status_code == 404, r.text
    # An action delivered by another partner key is not this key's either.
    theirs = new_action(fund, admin, partner_key_id="0123456789abcdef")
    assert enrol(fund, partner, theirs["id"], mine).status_code == 404


def test_concurrent_enrolments_never_pass_capacity(db, fund, admin, partner, partner_token):
    capacity, callers = 5, 20
    ptce = laureates(db, callers)
    action = new_action(fund, admin, capacity=capacity, partner_key_id=key_id(partner_token))
    codes = []
    barrier = threading.Barrier(callers)

    def one(dossier):
        barrier.wait()
        codes.append(enrol(fund, partner, action["id"], dossier).status_code)

    threads = [threading.Thread(target=one, args=(d,)) for d in ptce]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [201] * capacity + [409] * (callers - capacity), codes
    assert sql(db, "SELECT enrolled, (SELECT count(*) FROM funding.support_enrolment"
                   " WHERE action_id = %s) FROM funding.support_action WHERE id = %s",
               action["id"], action["id"])[0] == (capacity, capacity)
    r = requests.get(f"{fund}/v1/support/actions", params={"limit": 200}, headers=partner,
                     timeout=TIMEOUT)
    listed = [a for a in conform(r, "/v1/support/actions", "get")["items"]
              if a["id"] == action["id"]]
    assert listed and listed[0]["remaining"] == 0


def test_enrolment_idempotency_and_delivery(db, fund, admin, partner, keys):
    (dossier,) = laureates(db, 1)
    action = new_action(fund, admin)
    key = str(uuid.uuid4())
    first = enrol(fund, partner, action["id"], dossier, key)
    assert first.status_code == 201, first.text
    enrolment = conform(first, "/v1/support/enrolments", "post")
    replay = enrol(fund, partner, action["id"], dossier, key)
    assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == enrolment
    other = requests.post(f"{fund}/v1/support/enrolments",
                          json={"action_id": action["id"], "dossier_id": dossier, "note": "x"},
                          headers={**partner, "Idempotency-Key": key}, timeout=TIMEOUT)
    assert other.status_code == 422
    assert enrol(fund, partner, action["id"], dossier).status_code == 409  # enrolled already
    r = requests.post(f"{fund}/v1/support/enrolments", json={"action_id": action["id"],
                      "dossier_id": dossier}, headers=partner, timeout=TIMEOUT)
    assert r.status_code == 428
    assert sql(db, "SELECT enrolled FROM funding.support_action WHERE id = %s",
               action["id"])[0][0] == 1

    url = f"{fund}/v1/support/enrolments/{enrolment['id']}"
    got = requests.get(url, headers=partner, timeout=TIMEOUT)
    etag = got.headers["ETag"]
    assert conform(got, "/v1/support/enrolments/{id}", "get")["state"] == "enrolled"
    other_partner = bearer(keys.create("partner", regions="84"))
    assert requests.get(url, headers=other_partner, timeout=TIMEOUT).status_code == 404
    body = {"delivered_on": datetime.date.today().isoformat(), "note": "2 h d'atelier"}
    r = requests.post(url + "/deliveries", json=body, headers=partner, timeout=TIMEOUT)
    assert r.status_code == 428
    r = requests.post(url + "/deliveries", json=body, headers={**partner, "If-Match": '"v9"'},
                      timeout=TIMEOUT)
    assert r.status_code == 412
    r = requests.post(url + "/deliveries", json={"delivered_on": "2026-02-30"},
                      headers={**partner, "If-Match": etag}, timeout=TIMEOUT)
    assert r.status_code == 400
    r = requests.post(url + "/deliveries", json=body, headers={**partner, "If-Match": etag},
                      timeout=TIMEOUT)
    delivered = conform(r, "/v1/support/enrolments/{id}/deliveries", "post")
    assert delivered["state"] == "delivered" and r.headers["ETag"] != etag
    r = requests.post(url + "/deliveries", json=body,
                      headers={**partner, "If-Match": r.headers["ETag"]}, timeout=TIMEOUT)
    assert r.status_code == 409


def test_uptake_per_action_and_region(db, fund, admin, partner, keys):
    ptce = laureates(db, 2)
    action = new_action(fund, admin, capacity=3)
    for d in ptce:
        assert enrol(fund, partner, action["id"], d).status_code == 201
    r = requests.get(f"{fund}/v1/support/uptake", headers=bearer(keys.create("dashboard")),
                     timeout=TIMEOUT)
    uptake = conform(r, "/v1/support/uptake", "get")
    row = [a for a in uptake["actions"] if a["action_id"] == action["id"]]
    assert row and row[0]["enrolled"] == 2 and row[0]["capacity"] == 3
    region = [g for g in uptake["regions"] if g["region"] == "84"]
    assert region and region[0]["enrolments"] >= 2 and region[0]["beneficiaries"] >= 2
    r = requests.get(f"{fund}/v1/support/beneficiaries", headers=bearer(keys.create("dashboard")),
                     timeout=TIMEOUT)
    assert r.status_code == 403  # dashboards read aggregates only


def test_action_validation(fund, admin, partner):
    r = requests.post(f"{fund}/v1/support/actions",
                      json=action_body(format="group", capacity=0, ends_on="2020-01-01",
                                       title=" "), headers=admin, timeout=TIMEOUT)
    fields = {e["field"] for e in conform(r, "/v1/support/actions", "post")["errors"]}
    assert fields == {"format", "capacity", "ends_on", "title"}
    r = requests.post(f"{fund}/v1/support/actions", json=action_body(), headers=partner,
                      timeout=TIMEOUT)
    assert r.status_code == 403


# ---- the charter ----

def signature(**changes):
    body = {"organisation": "Coop du Val", "siret": "73282932000074", "role": "carrier",
            "charter_version": f"v{uuid.uuid4().hex[:8]}", "signed_on": "2026-06-01"}
    body.update(changes)
    return body


@pytest.mark.parametrize("changes,field", [
    ({"siret": "73282932000075"}, "siret"),      # bad Luhn check digit
    ({"siret": "7328293200007"}, "siret"),       # 13 digits
    ({"role": "member"}, "role"),
    ({"signed_on": "2026-02-29"}, "signed_on"),  # 2026 is not a leap year
    ({"signed_on": "2026-6-01"}, "signed_on"),
    ({"signed_on": "2999-01-01"}, "signed_on"),  # in the future
    ({"organisation": ""}, "organisation"),
    ({"charter_version": "v 1"}, "charter_version"),
])
def test_charter_signature_validation(fund, admin, changes, field):
    r = requests.post(f"{fund}/v1/charter/signatures", json=signature(**changes), headers=admin,
                      timeout=TIMEOUT)
    body = conform(r, "/v1/charter/signatures", "post")
    assert r.status_code == 400 and [e["field"] for e in body["errors"]] == [field]


def test_charter_signatures_and_public_list(fund, admin):
    body = signature(siret="35600000000048", role="contributor")  # La Poste's head office
    r = requests.post(f"{fund}/v1/charter/signatures", json=body, headers=admin, timeout=TIMEOUT)
    created = conform(r, "/v1/charter/signatures", "post")
    assert r.status_code == 201 and created["siret"] == body["siret"]
    r = requests.post(f"{fund}/v1/charter/signatures", json=body, headers=admin, timeout=TIMEOUT)
    assert r.status_code == 409
    r = requests.get(f"{fund}/v1/charter/signatories",
                     params={"charter_version": body["charter_version"]}, timeout=TIMEOUT)
    page = conform(r, "/v1/charter/signatories", "get")  # no key: public data
    assert [s["id"] for s in page["items"]] == [created["id"]]
    assert "recorded_by" not in page["items"][0]
    r = requests.get(f"{fund}/v1/charter/signatories", params={"cursor": "forged"},
                     timeout=TIMEOUT)
    assert r.status_code == 400
