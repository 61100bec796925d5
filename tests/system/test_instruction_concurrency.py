"""Instruction under concurrency: handlers off the HTTP workers, Idempotency-Key, one lock order.

- Every instruction route runs on a database thread (HTTP_DB): requests held by a row lock,
  more of them than the HTTP workers, do not stop other /v1 reads from answering.
- The creating POSTs (opinion requests, reviews, decisions, transitions) take an optional
  Idempotency-Key: the same key and request replay the first answer, another request with the
  key is 422, a twin still in flight 409; keys are scoped to the API key.
- A single transition capped by the wave's phase-2 slots and a bulk decision lock the wave's
  row first, then the dossiers' rows in id order: run together over the same dossiers, they
  never deadlock (no SQLSTATE 40P01 in the log), never answer 5xx, and the cap holds.

The worker and lock-order tests talk to a replica of instruction started here with 2 HTTP
workers (PTCE_HTTP_THREADS) and 8 database threads, beside the stack's own.
"""
import os
import subprocess
import threading
import time
import uuid

import psycopg
import pytest
import requests

from conftest import bearer, sql, wait_until
from test_instruction import T, get
from test_instruction_work import injected, new_wave

REPLICA = 5  # PTCE_PORT_BASE + 52
HTTP_THREADS = 2
DB_THREADS = 8


@pytest.fixture(scope="module")
def k(keys):
    return {
        "admin": bearer(keys.create("national_admin")),
        "admin2": bearer(keys.create("national_admin")),
        "i84": bearer(keys.create("regional_instructor", regions="84")),
    }


@pytest.fixture(scope="module")
def api(urls):
    return urls["instruction"]


@pytest.fixture(scope="module")
def narrow(stack):
    """A replica of instruction with few HTTP workers: (url, log path)."""
    env = dict(os.environ)
    env["PTCE_SERVICE_ENV"] = (env.get("PTCE_SERVICE_ENV", "") +
                               f" PTCE_HTTP_THREADS={HTTP_THREADS} PTCE_DB_THREADS={DB_THREADS}"
                               " PTCE_DB_POOL_SIZE=16")
    subprocess.run([stack.script, "start-service", "instruction", stack.build, str(REPLICA)],
                   env=env, check=True, timeout=60)
    yield stack.replica_url("instruction", REPLICA), stack.replica_log_path("instruction", REPLICA)
    stack.stop_replica("instruction", REPLICA)


def lock_rows(admin_url, ids):
    """An open transaction holding the dossiers' rows FOR UPDATE; commit() releases them."""
    conn = psycopg.connect(admin_url)
    conn.execute("SELECT 1 FROM instruction.dossier WHERE id = ANY(%s::uuid[]) FOR UPDATE", (ids,))
    return conn


def move(api, did, key, to, etag="*", **extra):
    headers = {**key, "If-Match": etag, **extra.pop("headers", {})}
    return requests.post(f"{api}/v1/dossiers/{did}/transitions", json={"to": to, **extra},
                         headers=headers, timeout=30)


# ---- (a) handlers off the HTTP workers ----

def test_requests_held_by_row_locks_do_not_hold_the_http_workers(narrow, k, api, db, admin_url):
    url, _ = narrow
    wave = new_wave(db, 3)
    held = injected(db, api, k, wave, n=2 * HTTP_THREADS)
    (free,) = injected(db, api, k, wave)
    holder = lock_rows(admin_url, held)
    results = {}
    try:
        def slow(did):
            results[did] = move(url, did, k["i84"], "regional_review").status_code

        threads = [threading.Thread(target=slow, args=(did,)) for did in held]
        for t in threads:
            t.start()
        # Every slow request is in, waiting on its row lock on a database thread.
        wait_until(lambda: sql(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                                   " = %s AND wait_event_type = 'Lock'",
                               f"instruction-{REPLICA}")[0][0] == len(held),
                   timeout=10, interval=0.05, what="the transitions to wait on their row locks")
        # Meanwhile /v1 reads of this replica answer at once, as many as asked.
        for _ in range(3 * HTTP_THREADS):
            t0 = time.monotonic()
            r = requests.get(f"{url}/v1/dossiers/{free}", headers=k["i84"], timeout=5)
            assert r.status_code == 200, r.text
            r = requests.get(f"{url}/v1/dossiers", params={"wave": wave}, headers=k["i84"],
                             timeout=5)
            assert r.status_code == 200, r.text
            assert time.monotonic() - t0 < 2.0, "a read waited behind the held requests"
        assert not results, f"the held requests answered before the locks went: {results}"
    finally:
        holder.commit()
        holder.close()
    for t in threads:
        t.join(30)
    assert list(results.values()) == [200] * len(held), results


# ---- (b) Idempotency-Key ----

def idem(key, value):
    return {**key, "Idempotency-Key": value}


def test_transition_replays_under_its_idempotency_key(k, api, db, admin_url):
    wave = new_wave(db, 3)
    did, other = injected(db, api, k, wave, n=2)
    key = str(uuid.uuid4())
    first = move(api, did, k["i84"], "regional_review", etag='"v1"',
                 headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = move(api, did, k["i84"], "regional_review", etag='"v1"',
                 headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and again.headers["ETag"] == first.headers["ETag"] == '"v2"'
    assert sql(db, "SELECT count(*) FROM instruction.dossier_history WHERE resource_id = %s",
               did)[0][0] == 1, "the replay moved nothing"
    # Another body, or the same body to another dossier: another request under that key.
    r = move(api, did, k["i84"], "closed", etag='"v2"', motivation="x",
             headers={"Idempotency-Key": key})
    assert r.status_code == 422, r.text
    r = move(api, other, k["i84"], "regional_review", etag='"v1"',
             headers={"Idempotency-Key": key})
    assert r.status_code == 422, r.text
    # A refusal stores nothing: the key runs again once the cause is mended.
    key2 = str(uuid.uuid4())
    assert move(api, other, k["i84"], "regional_review", etag='"v9"',
                headers={"Idempotency-Key": key2}).status_code == 412
    assert move(api, other, k["i84"], "regional_review", etag='"v1"',
                headers={"Idempotency-Key": key2}).status_code == 200
    # Still in flight: the twin gets 409 at once, the first one its answer.
    (third,) = injected(db, api, k, wave)
    holder = lock_rows(admin_url, [third])
    key3, out = str(uuid.uuid4()), {}
    try:
        t = threading.Thread(target=lambda: out.setdefault("r", move(
            api, third, k["i84"], "regional_review", headers={"Idempotency-Key": key3})))
        t.start()
        # The claim comes first, then the row lock: once it waits on the row, the key is held.
        wait_until(lambda: sql(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                                   " LIKE 'instruction%%' AND wait_event_type = 'Lock'")[0][0] > 0,
                   timeout=10, interval=0.05, what="the first request to wait on the row")
        t0 = time.monotonic()
        twin = move(api, third, k["i84"], "regional_review", headers={"Idempotency-Key": key3})
        assert twin.status_code == 409 and "still being answered" in twin.json()["detail"], twin.text
        assert time.monotonic() - t0 < 2.0
    finally:
        holder.commit()
        holder.close()
    t.join(30)
    assert out["r"].status_code == 200, out["r"].text


def test_opinion_request_replay_never_shows_the_token_again(k, api, db):
    wave = new_wave(db, 3)
    (did,) = injected(db, api, k, wave)
    body = {"expert": {"name": "Expert"}, "question": "Viable ?",
            "deadline": "2030-01-01T00:00:00Z"}
    key = str(uuid.uuid4())
    url = f"{api}/v1/dossiers/{did}/opinion-requests"
    first = requests.post(url, json=body, headers=idem(k["i84"], key), timeout=T)
    assert first.status_code == 201, first.text
    assert first.json()["token"].startswith("ptce_")
    again = requests.post(url, json=body, headers=idem(k["i84"], key), timeout=T)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    expected = {name: value for name, value in first.json().items() if name != "token"}
    assert again.json() == expected, "the same request, without its one-time token"
    assert sql(db, "SELECT count(*) FROM instruction.opinion_request WHERE dossier_id = %s",
               did)[0][0] == 1
    stored = sql(db, "SELECT response_body FROM instruction.idempotency_request WHERE key = %s",
                 key)[0][0]
    assert first.json()["token"] not in stored, "no bearer token in clear in the database"
    r = requests.post(url, json={**body, "question": "Autre ?"}, headers=idem(k["i84"], key),
                      timeout=T)
    assert r.status_code == 422
    # Keys are scoped per API key: another key's same Idempotency-Key is its own request.
    r = requests.post(url, json=body, headers=idem(k["admin"], key), timeout=T)
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers and "token" in r.json()
    assert requests.post(url, json=body, headers=idem(k["i84"], ""),
                         timeout=T).status_code == 400
    assert requests.post(url, json=body, headers=idem(k["i84"], "x" * 201),
                         timeout=T).status_code == 400
    # Without the header every call runs.
    assert requests.post(url, json=body, headers=k["i84"], timeout=T).status_code == 201
    assert sql(db, "SELECT count(*) FROM instruction.opinion_request WHERE dossier_id = %s",
               did)[0][0] == 3


def test_review_and_decisions_replay(k, api, db):
    wave = new_wave(db, 3)
    a, b = injected(db, api, k, wave, n=2)
    review = {"phase": 1, "scores": {"cooperation": 5, "territory": 4, "economic_model": 3,
                                     "governance": 2}}
    key = str(uuid.uuid4())
    url = f"{api}/v1/dossiers/{a}/reviews"
    first = requests.post(url, json=review, headers=idem(k["i84"], key), timeout=T)
    assert first.status_code == 201, first.text
    again = requests.post(url, json=review, headers=idem(k["i84"], key), timeout=T)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert get(api, a, k["admin"]).json()["version"] == 2, "the replay changed nothing"
    changed = {**review, "comment": "autre"}
    assert requests.post(url, json=changed, headers=idem(k["i84"], key),
                         timeout=T).status_code == 422
    sql(db, "UPDATE instruction.dossier SET state = 'awaiting_decision' WHERE id = ANY(%s::uuid[])",
        [a, b])
    decisions = {"phase": 1, "decisions": [
        {"dossier_id": a, "outcome": "phase1_laureate", "reference": "CNA-1"},
        {"dossier_id": b, "outcome": "refused", "motivation": "hors champ", "reference": "CNA-2"}]}
    url = f"{api}/v1/waves/{wave}/decisions"
    key = str(uuid.uuid4())
    first = requests.post(url, json=decisions, headers=idem(k["admin"], key), timeout=60)
    assert first.status_code == 200, first.text
    again = requests.post(url, json=decisions, headers=idem(k["admin"], key), timeout=60)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert sql(db, "SELECT count(*) FROM instruction.outbox WHERE key = %s AND type ="
                   " 'dossier.decided'", a)[0][0] == 1, "decided once"
    # The same batch without the key is a new request, and the dossiers are decided already.
    assert requests.post(url, json=decisions, headers=k["admin"], timeout=60).status_code == 409
    # Another API key's identical key is its own request (409 here: already decided).
    assert requests.post(url, json=decisions, headers=idem(k["admin2"], key),
                         timeout=60).status_code == 409


# ---- (c) one lock order: single transitions and bulk decisions together ----

def test_single_transitions_and_bulk_decisions_never_deadlock(narrow, k, db):
    url, log = narrow
    slots, n = 4, 36
    with open(log, "rb") as f:
        f.seek(0, os.SEEK_END)
        log_start = f.tell()
    statuses = []
    for _ in range(3):  # three rounds, each on a fresh wave
        wave = new_wave(db, slots)
        ids = sorted(injected(db, url, k, wave, n=n))
        sql(db, "UPDATE instruction.dossier SET state = 'phase2_review' WHERE id = ANY(%s::uuid[])",
            ids)
        calls = []
        # Bulk decisions over overlapping windows of 12 dossiers (2 laureates each), in an
        # order of their own (the service sorts them), and single transitions to
        # phase2_laureate of dossiers inside those windows.
        for start in range(0, n - 11, 6):
            window = ids[start:start + 12]
            batch = [{"dossier_id": d, "outcome": "phase2_laureate" if i < 2 else
                      "phase2_not_selected", "motivation": "classement", "reference": "CNA"}
                     for i, d in enumerate(reversed(window))]
            calls.append(("POST", f"{url}/v1/waves/{wave}/decisions",
                          {"phase": 2, "decisions": batch}, {}))
        for did in ids[3::3]:
            calls.append(("POST", f"{url}/v1/dossiers/{did}/transitions",
                          {"to": "phase2_laureate"}, {"If-Match": "*"}))
        barrier = threading.Barrier(len(calls))
        out = [None] * len(calls)

        def run(i, method, target, body, headers):
            barrier.wait()
            r = requests.request(method, target, json=body, headers={**k["admin"], **headers},
                                 timeout=60)
            out[i] = (r.status_code, r.text[:300])

        threads = [threading.Thread(target=run, args=(i, *c)) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        statuses += out
        laureates = sql(db, "SELECT count(*) FROM instruction.dossier WHERE wave = %s"
                            " AND state = 'phase2_laureate'", wave)[0][0]
        assert 0 < laureates <= slots, (laureates, out)
    unexpected = [s for s in statuses if not s or s[0] not in (200, 409)]
    assert not unexpected, unexpected
    with open(log, "rb") as f:
        f.seek(log_start)
        tail = f.read().decode("utf-8", "replace")
    assert "40P01" not in tail, [line for line in tail.splitlines() if "40P01" in line][:5]
