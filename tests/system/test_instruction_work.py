"""Instruction's experts, scoring, national decisions, statistics and export, through the API.

Waves and dossiers that need a precise arrangement are written as submission's events into its
outbox (as test_exactly_once does); the states a test starts from are reached through the API,
except for the slot-cap test, which sets 40 dossiers in phase2_review directly in the database
to spend its time on the concurrent decisions.
"""
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from conftest import bearer, sql, wait_until
from test_instruction import (T, applied, deposit, events_of, get, inject, move, put,
                              ready_for_decision, step)
from test_openapi_conformance import check_event

SIRET = "73282932000074"  # the carrier's and first member's SIRET of partner_body()


@pytest.fixture(scope="module")
def api(urls):
    return urls["instruction"]


@pytest.fixture(scope="module")
def k(keys):
    return {
        "admin": bearer(keys.create("national_admin")),
        "i84": bearer(keys.create("regional_instructor", regions="84")),
        "i11": bearer(keys.create("regional_instructor", regions="11")),
        "dash": bearer(keys.create("dashboard")),
        "partner": bearer(keys.create("partner", regions="84,11")),
    }


def soon(**delta):
    return (datetime.now(timezone.utc) + timedelta(**delta)).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def ask(api, did, key, **body):
    body = {"expert": {"name": "Expert"}, "question": "Viable ?", "deadline": soon(days=10),
            **body}
    return requests.post(f"{api}/v1/dossiers/{did}/opinion-requests", json=body, headers=key,
                         timeout=T)


def declare(api, rid, token, **body):
    return requests.post(f"{api}/v1/opinion-requests/{rid}/declaration",
                         json={"interests": "none", **body}, headers=bearer(token), timeout=T)


def new_wave(db, slots, wid=None, **parameters):
    """Publishes a wave as submission would (its instruction parameters optional)."""
    wid = wid or f"t{uuid.uuid4().hex[:10]}"
    eid = str(uuid.uuid4())
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    wave = {"id": wid, "label": "test", "deposit_opens_at": "2026-01-01T00:00:00+00:00",
            "deposit_closes_at": None, "phase2_opens_at": None, "phase2_closes_at": None,
            "phase2_slots": slots, "amount_per_laureate_cents": 10000000,
            "rules_version": "decret-2015-431/v1", **parameters}
    payload = json.dumps({"specversion": "1.0", "id": eid, "source": "/ptce/submission",
                          "type": "wave.published", "subject": wid, "time": now,
                          "datacontenttype": "application/json", "data": {"wave": wave}})
    check_event(json.loads(payload), "wave.published")
    sql(db, "INSERT INTO submission.outbox (event_id, topic, key, type, payload)"
            " VALUES (%s, 'ptce.submission.events', %s, 'wave.published', %s)", eid, wid, payload)
    wait_until(lambda: applied(db, eid) == 1, what="the wave")
    return wid


def injected(db, api, k, wave, region="84", n=1):
    ids = [str(uuid.uuid4()) for _ in range(n)]
    events = [inject(db, did, "dossier.deposited",
                     {"id": did, "state": "deposited", "region": region, "wave": wave,
                      "title": "inj", "version": 1, "eligibility": "eligible",
                      "carrier": {"siret": SIRET, "name": "Carrier"}}) for did in ids]
    # every one: the consumers apply partitions side by side, so the last one produced may be
    # applied before the others
    wait_until(lambda: all(applied(db, e) == 1 for e in events), what="the dossiers")
    return ids


# ---- experts ----

def test_expert_declaration_answer_and_confidentiality(urls, k, api, db):
    did = deposit(urls, k, api)
    other = deposit(urls, k, api)
    step(api, did, k["i84"], "regional_review")
    r = ask(api, did, k["i84"], confidential=True, yes_no=True)
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["token"].startswith("ptce_") and a["state"] == "requested"
    b = ask(api, did, k["i84"]).json()
    ka, kb = bearer(a["token"]), bearer(b["token"])
    # No content before the declaration.
    assert get(api, did, ka).status_code == 404
    r = requests.put(f"{api}/v1/opinion-requests/{a['id']}/answer", json={"answer": "x", "yes": True},
                     headers=ka, timeout=T)
    assert r.status_code == 409
    assert declare(api, a["id"], a["token"]).json()["state"] == "declared"
    doc = get(api, did, ka)
    assert doc.status_code == 200 and "annotations" not in doc.json()
    # Another dossier, and another expert's request, stay hidden.
    assert get(api, other, ka).status_code == 404
    assert requests.get(f"{api}/v1/dossiers/{other}/history", headers=ka, timeout=T).status_code == 404
    assert declare(api, b["id"], a["token"]).status_code == 404
    r = requests.put(f"{api}/v1/opinion-requests/{a['id']}/answer", json={"answer": "oui"},
                     headers=ka, timeout=T)
    assert r.status_code == 400, "a yes/no question needs yes"
    r = requests.put(f"{api}/v1/opinion-requests/{a['id']}/answer",
                     json={"answer": "solide", "yes": True}, headers=ka, timeout=T)
    assert r.status_code == 200 and r.json()["state"] == "answered"
    assert declare(api, b["id"], b["token"]).status_code == 200
    requests.put(f"{api}/v1/opinion-requests/{b['id']}/answer", json={"answer": "public"},
                 headers=kb, timeout=T)
    seen_b = requests.get(f"{api}/v1/dossiers/{did}/opinion-requests", headers=kb, timeout=T).json()
    assert [o["id"] for o in seen_b["items"]] == [b["id"]], "the confidential opinion is hidden"
    seen_i = requests.get(f"{api}/v1/dossiers/{did}/opinion-requests", headers=k["i84"],
                          timeout=T).json()
    assert {o["id"]: o["answer"] for o in seen_i["items"]} == {a["id"]: "solide", b["id"]: "public"}
    recorded = events_of(db, did, "dossier.opinion_recorded")
    assert len(recorded) == 2
    for e in recorded:
        check_event(e, "dossier.opinion_recorded")
    # Experts do not move dossiers.
    assert move(api, did, ka, "awaiting_decision", '"v2"').status_code == 403


def test_conflict_of_interest_blocks_the_expert(urls, k, api, db):
    did = deposit(urls, k, api)
    r = ask(api, did, k["i84"], expert={"name": "Member", "siret": SIRET})
    assert r.status_code == 201
    c = r.json()
    r = declare(api, c["id"], c["token"])
    assert r.status_code == 409 and "conflict of interest" in r.json()["detail"]
    state = sql(db, "SELECT state FROM instruction.opinion_request WHERE id = %s", c["id"])[0][0]
    assert state == "blocked"
    wait_until(lambda: get(api, did, bearer(c["token"])).status_code == 401, timeout=10,
               what="the blocked expert's key to be refused")
    # Declaring an organisation SIRET among the members blocks too.
    d = ask(api, did, k["i84"]).json()
    assert declare(api, d["id"], d["token"], organisation_siret=SIRET).status_code == 409


def test_expired_expert_key_and_revoke_and_remind(urls, k, api):
    did = deposit(urls, k, api)
    e = ask(api, did, k["i84"], deadline=soon(seconds=2)).json()
    assert declare(api, e["id"], e["token"]).status_code == 200
    wait_until(lambda: get(api, did, bearer(e["token"])).status_code == 401, timeout=15,
               what="the expired expert key to be refused")
    f = ask(api, did, k["i84"]).json()
    r = requests.post(f"{api}/v1/opinion-requests/{f['id']}/remind", headers=k["i84"], timeout=T)
    assert r.status_code == 200 and r.json()["reminders"] == 1
    assert requests.post(f"{api}/v1/opinion-requests/{f['id']}/remind", headers=k["i11"],
                         timeout=T).status_code == 404
    r = requests.post(f"{api}/v1/opinion-requests/{f['id']}/revoke", headers=k["i84"], timeout=T)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    wait_until(lambda: declare(api, f["id"], f["token"]).status_code == 401, timeout=10,
               what="the revoked key to be refused")
    r = ask(api, did, k["i84"], deadline="tomorrow")
    assert r.status_code == 400


# ---- scoring and rankings ----

def review(api, did, key, **scores):
    return requests.post(f"{api}/v1/dossiers/{did}/reviews", json={"phase": 1, "scores": scores},
                         headers=key, timeout=T)


def test_reviews_consolidate_and_rank(k, api, db):
    wave = new_wave(db, 2)
    a, b = injected(db, api, k, wave, n=2)
    (c,) = injected(db, api, k, wave, region="11")
    r = review(api, a, k["i84"], cooperation=5, territory=5, economic_model=5, governance=5)
    assert r.status_code == 201, r.text
    assert r.json()["total"] == 10000
    r = review(api, a, k["admin"], cooperation=3, territory=2, economic_model=4, governance=1)
    # (3·3/5 + 2·2/5 + 2·4/5 + 1·1/5) / 8 = 4.4 / 8 = 55 %
    assert r.json()["total"] == 5500 and r.json()["consolidated"] == \
        {"score": 7750, "spread": 4500, "reviews": 2}
    assert review(api, a, k["i84"], cooperation=6, territory=5, economic_model=5,
                  governance=5).status_code == 400
    assert review(api, a, k["i84"], cooperation=5).status_code == 400
    review(api, b, k["i84"], cooperation=1, territory=1, economic_model=1, governance=1)
    review(api, c, k["admin"], cooperation=3, territory=3, economic_model=3, governance=3)
    assert get(api, a, k["admin"]).json()["score"]["phase1"] == 7750
    r = requests.get(f"{api}/v1/rankings", params={"wave": wave, "phase": 1}, headers=k["admin"],
                     timeout=T)
    body = r.json()
    assert [i["dossier_id"] for i in body["items"]] == [a, c, b]
    assert [i["rank"] for i in body["items"]] == [1, 2, 3]
    assert body["balance_by_region"] == {
        "84": {"dossiers": 2, "phase1_laureates": 0, "phase2_laureates": 0},
        "11": {"dossiers": 1, "phase1_laureates": 0, "phase2_laureates": 0}}
    r = requests.get(f"{api}/v1/rankings", params={"wave": wave, "region": "84", "limit": 1},
                     headers=k["admin"], timeout=T).json()
    assert [i["dossier_id"] for i in r["items"]] == [a] and r["next_cursor"]
    assert list(r["balance_by_region"]) == ["84"], "a region's ranking balances that region"
    r = requests.get(f"{api}/v1/rankings", params={"wave": wave, "region": "84",
                                                   "cursor": r["next_cursor"]},
                     headers=k["admin"], timeout=T).json()
    assert [i["dossier_id"] for i in r["items"]] == [b]
    r = requests.get(f"{api}/v1/rankings", params={"wave": wave}, headers=k["i11"], timeout=T)
    assert [i["dossier_id"] for i in r.json()["items"]] == [c]
    assert requests.get(f"{api}/v1/rankings", params={"wave": wave}, headers=k["dash"],
                        timeout=T).status_code == 404
    assert requests.get(f"{api}/v1/rankings", headers=k["admin"], timeout=T).status_code == 400

    # The balance may come from memory for PTCE_RANKING_BALANCE_TTL_MS (1 s by default): a new
    # dossier is counted once that time has passed, never later.
    def balance_84():
        return requests.get(f"{api}/v1/rankings", params={"wave": wave}, headers=k["admin"],
                            timeout=T).json()["balance_by_region"]["84"]["dossiers"]
    assert balance_84() == 2
    injected(db, api, k, wave)
    wait_until(lambda: balance_84() == 3, timeout=4, what="the new dossier in the balance")

    # The whole answer may come from memory too (PTCE_RANKING_TTL_MS), but never across a write
    # this service committed: a label put now shows on the very next read.
    def labels_of_a():
        items = requests.get(f"{api}/v1/rankings", params={"wave": wave, "region": "84"},
                             headers=k["admin"], timeout=T).json()["items"]
        return next(i["labels"] for i in items if i["dossier_id"] == a)
    assert labels_of_a() == [] and labels_of_a() == []
    assert put(api, a, k["i84"], "labels", {"labels": ["vu-en-comite"]}).status_code == 200
    assert labels_of_a() == ["vu-en-comite"]


# ---- national decisions ----

def decide(api, wave, key, phase, decisions):
    return requests.post(f"{api}/v1/waves/{wave}/decisions",
                         json={"phase": phase, "decisions": decisions}, headers=key, timeout=60)


def test_whole_lifecycle_through_bulk_decisions_and_phase2(urls, k, api, db):
    a = deposit(urls, k, api)
    b = deposit(urls, k, api)
    c = deposit(urls, k, api)
    for did in (a, b):
        ready_for_decision(api, did, k["i84"])
    wave = get(api, a, k["admin"]).json()["wave"]
    batch = [{"dossier_id": a, "outcome": "phase1_laureate", "reference": "CNA-1/1"},
             {"dossier_id": b, "outcome": "refused", "motivation": "hors champ",
              "reference": "CNA-1/2"},
             {"dossier_id": c, "outcome": "closed", "motivation": "doublon", "reference": "CNA-1/3"}]
    r = decide(api, wave, k["admin"], 1, batch)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "decisions[2]"
    assert get(api, a, k["admin"]).json()["state"] == "awaiting_decision", "all or nothing"
    r = decide(api, wave, k["admin"], 1, [{**batch[1], "motivation": None}])
    assert r.status_code == 400
    assert decide(api, wave, k["i84"], 1, batch[:2]).status_code == 403
    r = decide(api, wave, k["admin"], 1, batch[:2])
    assert r.status_code == 200, r.text
    assert r.json()["decided"] == 2
    assert get(api, a, k["admin"]).json()["state"] == "phase1_laureate"
    decided = events_of(db, a, "dossier.decided") + events_of(db, b, "dossier.decided")
    assert [e["data"]["outcome"] for e in decided] == ["phase1_laureate", "refused"]
    for e in decided:
        check_event(e, "dossier.decided")
    assert decided[0]["data"]["reference"] == "CNA-1/1"
    assert decided[0]["data"]["beneficiary"] == {"siret": SIRET, "name": "X"}
    assert decided[1]["data"]["motivation"] == "hors champ"
    # Decided once: the same batch again is refused.
    assert decide(api, wave, k["admin"], 1, batch[:1]).status_code == 409
    # Phase 2: the invitation needs a deadline.
    r = move(api, a, k["admin"], "phase2_invited", get(api, a, k["admin"]).headers["ETag"])
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "deadline"
    doc = step(api, a, k["admin"], "phase2_invited", deadline="2030-01-31")
    assert doc["phase2_deadline"] == "2030-01-31T23:59:59.999Z"
    invited = events_of(db, a, "dossier.phase2_invited")
    assert len(invited) == 1
    check_event(invited[0], "dossier.phase2_invited")
    step(api, a, k["i84"], "phase2_applied")
    step(api, a, k["i84"], "phase2_review")
    r = decide(api, wave, k["admin"], 2, [{"dossier_id": a, "outcome": "phase2_laureate",
                                           "reference": "CNA-2/1"}])
    assert r.status_code == 200, r.text
    p2 = events_of(db, a, "dossier.phase2_decided")
    assert len(p2) == 1
    check_event(p2[0], "dossier.phase2_decided")
    history = requests.get(f"{api}/v1/dossiers/{a}/history", headers=k["admin"], timeout=T).json()
    assert [h["to"] for h in history["items"]] == [
        "regional_review", "awaiting_decision", "phase1_laureate", "phase2_invited",
        "phase2_applied", "phase2_review", "phase2_laureate"]
    for etype in ("dossier.state_changed",):
        for e in events_of(db, a, etype):
            check_event(e, etype)


def test_phase1_and_phase2_filed_together(urls, k, api):
    did = deposit(urls, k, api)
    ready_for_decision(api, did, k["i84"])
    step(api, did, k["admin"], "phase1_laureate")
    r = move(api, did, k["admin"], "phase2_applied", get(api, did, k["admin"]).headers["ETag"])
    assert r.status_code == 422
    assert put(api, did, k["i84"], "labels", {"labels": ["phase1_phase2_combined"]}).status_code == 200
    assert step(api, did, k["admin"], "phase2_applied")["state"] == "phase2_applied"


def test_phase2_slot_cap_under_20_concurrent_bulk_decisions(k, api, db):
    wave = new_wave(db, 5)
    ids = injected(db, api, k, wave, n=40)
    sql(db, "UPDATE instruction.dossier SET state = 'phase2_review' WHERE id = ANY(%s::uuid[])", ids)
    results = [None] * 20
    start = threading.Barrier(20)

    def run(i):
        start.wait()
        results[i] = decide(api, wave, k["admin"], 2, [
            {"dossier_id": ids[2 * i], "outcome": "phase2_laureate", "reference": f"R{i}"},
            {"dossier_id": ids[2 * i + 1], "outcome": "phase2_not_selected",
             "motivation": "classement", "reference": f"R{i}"}]).status_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert results.count(200) == 5 and results.count(409) == 15, results
    laureates = sql(db, "SELECT count(*) FROM instruction.dossier WHERE wave = %s"
                        " AND state = 'phase2_laureate'", wave)[0][0]
    assert laureates == 5
    not_selected = sql(db, "SELECT count(*) FROM instruction.dossier WHERE wave = %s"
                           " AND state = 'phase2_not_selected'", wave)[0][0]
    assert not_selected == 5, "a refused batch records none of its decisions"


# ---- statistics and export ----

def test_funnel_delays_and_csv_export(k, api, db):
    wave = new_wave(db, 1)
    a, b = injected(db, api, k, wave, n=2)
    (c,) = injected(db, api, k, wave, region="11")
    step(api, a, k["i84"], "regional_review")
    sql(db, "UPDATE instruction.dossier SET state = 'refused', decided_at = deposited_at"
            " + interval '10 days' WHERE id = %s", b)
    sql(db, "UPDATE instruction.dossier SET deposited_at = now() - interval '60 days'"
            " WHERE id = %s", c)
    r = requests.get(f"{api}/v1/stats/funnel", params={"wave": wave}, headers=k["dash"], timeout=T)
    assert r.status_code == 200
    zero = dict(deposited=0, eligible=0, in_review=0, phase1_laureates=0, phase2_invited=0,
                phase2_laureates=0, refused=0, closed=0)
    assert r.json() == {"wave": wave, **zero, "deposited": 3, "eligible": 3, "in_review": 1,
                        "refused": 1, "by_region": {
                            "84": {**zero, "deposited": 2, "eligible": 2, "in_review": 1,
                                   "refused": 1},
                            "11": {**zero, "deposited": 1, "eligible": 1}}}
    r = requests.get(f"{api}/v1/stats/funnel", params={"wave": wave}, headers=k["i11"], timeout=T)
    assert set(r.json()["by_region"]) == {"11"} and r.json()["deposited"] == 1
    r = requests.get(f"{api}/v1/stats/delays", params={"wave": wave}, headers=k["dash"], timeout=T)
    assert r.json()["p50_days"] == 10 and r.json()["overdue"] == 1
    assert r.json()["by_region"] == {"84": {"decided": 1, "p50_days": 10, "p90_days": 10}}
    overdue = requests.get(f"{api}/v1/dossiers", params={"wave": wave, "overdue": "true"},
                           headers=k["admin"], timeout=T).json()
    assert [d["id"] for d in overdue["items"]] == [c]
    r = requests.get(f"{api}/v1/exports/dossiers.csv", params={"wave": wave, "region": "84"},
                     headers=k["admin"], timeout=T)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/csv; charset=utf-8"
    lines = r.content.decode("utf-8").split("\r\n")
    assert lines[0].split(";")[:5] == ["id", "wave", "region", "title", "state"]
    assert sorted(line.split(";")[0] for line in lines[1:] if line) == sorted([a, b])
    assert requests.get(f"{api}/v1/exports/dossiers.csv", headers=k["dash"],
                        timeout=T).status_code == 404


# ---- access: every dossier route, every role that must not see it ----

BODIES = {
    "/v1/dossiers/{id}/transitions": {"to": "regional_review"},
    "/v1/dossiers/{id}/assignment": {"group": "default", "reason": "r"},
    "/v1/dossiers/{id}/regional-opinion": {"opinion": "favourable"},
    "/v1/dossiers/{id}/annotations/{key}": {"value": True},
    "/v1/dossiers/{id}/labels": {"labels": ["x"]},
    "/v1/dossiers/{id}/opinion-requests": {"expert": {"name": "E"}, "question": "Q",
                                           "deadline": "2030-01-01T00:00:00Z"},
    "/v1/dossiers/{id}/reviews": {"phase": 1, "scores": {"cooperation": 1, "territory": 1,
                                                         "economic_model": 1, "governance": 1}},
    "/v1/opinion-requests/{rid}/declaration": {"interests": "none"},
    "/v1/opinion-requests/{rid}/answer": {"answer": "a"},
}


def test_cross_region_and_cross_dossier_404_for_each_role_and_route(urls, k, api):
    from route_matrix import ROUTES
    did = deposit(urls, k, api, region="84")
    other = deposit(urls, k, api, region="84")
    asked = ask(api, did, k["i84"]).json()
    elsewhere = ask(api, other, k["i84"]).json()
    assert declare(api, elsewhere["id"], elsewhere["token"]).status_code == 200
    outsiders = {
        "regional_instructor of another region": k["i11"],
        "dashboard": k["dash"],
        "expert of another dossier": bearer(elsewhere["token"]),
    }
    checked = 0
    for method, pattern, allowed, hidden in ROUTES["instruction"]:
        if "{id}" not in pattern and "{rid}" not in pattern:
            continue
        url = api + pattern.replace("{id}", did).replace("{rid}", asked["id"]) \
            .replace("{key}", "partners_met")
        for who, key in outsiders.items():
            role = "dashboard" if who == "dashboard" else who.split(" ")[0]
            if role not in allowed and role not in hidden:
                continue  # refused by role (403), not by scope
            headers = {**key, "If-Match": '"v1"'}
            r = requests.request(method, url, json=BODIES.get(pattern), headers=headers, timeout=T)
            assert r.status_code == 404, f"{who}: {method} {pattern} answered {r.status_code} {r.text}"
            checked += 1
    assert checked >= 30
    assert get(api, did, k["admin"]).json()["version"] == 1, "nothing was changed"


def test_wave_parameters_reach_instruction_as_events(k, api, db):
    """target_delay_days, grids and the annotation catalogue come with wave.published."""
    wave = new_wave(db, 3, target_delay_days=10,
                    grids={"1": [{"key": "only", "weight": 1, "max": 4}]},
                    annotations=[{"key": "visit", "type": "date", "mandatory": True, "label": "V"}])
    (did,) = injected(db, api, k, wave)
    assert sql(db, "SELECT target_delay_days FROM instruction.wave WHERE id = %s", wave)[0][0] == 10
    r = requests.post(f"{api}/v1/dossiers/{did}/reviews", json={"phase": 1, "scores": {"only": 3}},
                      headers=k["i84"], timeout=T)
    assert r.status_code == 201, r.text
    assert r.json()["grid"] == {"wave": wave, "version": 1} and r.json()["total"] == 7500
    step(api, did, k["i84"], "regional_review")
    assert put(api, did, k["i84"], "annotations/territorial_anchoring",
               {"value": "x"}).status_code == 404, "the wave's own catalogue replaces the default"
    assert put(api, did, k["i84"], "regional-opinion", {"opinion": "favourable"}).status_code == 200
    r = move(api, did, k["i84"], "awaiting_decision", get(api, did, k["i84"]).headers["ETag"])
    assert r.status_code == 422
    assert put(api, did, k["i84"], "annotations/visit", {"value": "2026-03-01"}).status_code == 200
    step(api, did, k["i84"], "awaiting_decision")
    # The same grid published again is no new version; a changed one is.
    new_wave(db, 3, wid=wave, grids={"1": [{"key": "only", "weight": 1, "max": 4}]})
    new_wave(db, 3, wid=wave, grids={"1": [{"key": "only", "weight": 1, "max": 5}]})
    assert sql(db, "SELECT max(version) FROM instruction.grid WHERE wave = %s AND phase = 1",
               wave)[0][0] == 2
