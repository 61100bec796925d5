"""Bad input gets the right 4xx as application/problem+json, and writes nothing.

Every refused request against submission's POST /v1/dossiers is checked for its status code,
its problem document (type, title, status, detail; status equal to the HTTP code; the request
id of the X-Request-Id header) and for the rows it did not write: submission.dossier,
submission.idempotency_request and submission.outbox are counted before and after. Then the happy
path of the same operation (create, replay, conflicting reuse of the key, concurrent retries),
and the probes of the three services.
"""
import json
import threading
import time
import uuid

import psycopg
import pytest
import requests

from conftest import bearer, partner_body, sql, wait_until

SERVICES = ("submission", "instruction", "funding")
BODY_LIMIT = 65536  # PTCE_HTTP_BODY_LIMIT in tests/run.sh


def valid_body(**overrides):
    return partner_body(**overrides)


def dumps(obj):
    return json.dumps(obj).encode()


def key_id(token):
    return token.split("_")[1]


def counts(db):
    """Rows of the three tables a creating POST writes to. Rows of DS dossiers are left out:
    submission's DS worker and poller may write them at any time, whatever these tests do."""
    return sql(db, "SELECT (SELECT count(*) FROM submission.dossier WHERE origin <> 'ds'),"
                   " (SELECT count(*) FROM submission.idempotency_request),"
                   " (SELECT count(*) FROM submission.outbox WHERE key NOT IN"
                   "   (SELECT id::text FROM submission.dossier WHERE origin = 'ds'))")[0]


# The problem type slugs of common/status.c, as api-spec/openapi.yaml names them.
SLUGS = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "too_large",
         415: "unsupported_media_type", 422: "unprocessable", 428: "precondition_required"}


def assert_problem(r, code, path=None):
    """The response is an RFC 9457 problem with this status; returns the parsed document."""
    assert r.status_code == code, f"expected {code}, got {r.status_code}: {r.text[:500]}"
    ctype = r.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() == "application/problem+json", ctype
    doc = r.json()
    assert isinstance(doc, dict), doc
    for field in ("type", "title", "detail"):
        assert isinstance(doc.get(field), str) and doc[field], f"problem without {field}: {doc}"
    assert doc.get("status") == code, doc
    assert doc["type"] == f"urn:ptce:problem:{SLUGS[code]}", doc
    if path:
        assert doc.get("instance") == path, doc
    rid = r.headers.get("X-Request-Id")
    assert rid, "no X-Request-Id header"
    assert doc.get("request_id") == rid, (doc.get("request_id"), rid)
    return doc


@pytest.fixture(scope="module")
def partner(keys):
    return keys.create("partner")


@pytest.fixture(scope="module")
def admin_key(keys):
    return keys.create("national_admin")


@pytest.fixture(scope="module")
def revoked(keys, urls):
    """A partner key that worked once (so the services have cached it), then was revoked."""
    token = keys.create("partner")
    r = requests.get(urls["submission"] + "/v1/waves", headers=bearer(token), timeout=10)
    assert r.status_code == 200, r.text
    keys.revoke(token)
    time.sleep(0.3)  # the auth cache trusts a checked key for 100 ms in tests
    return token


@pytest.fixture(scope="module")
def tokens(keys, partner, revoked):
    return {
        "partner": partner,
        "dashboard": keys.create("dashboard"),
        "expert": keys.create("expert"),
        "revoked": revoked,
        # Well formed (ptce_<16 hex>_<secret>) but in no table.
        "unknown": "ptce_" + uuid.uuid4().hex[:16] + "_" + "A" * 40,
    }


def gen_chunks(total, chunk=8192):
    """A body without Content-Length: requests sends a generator chunked."""
    def gen():
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            yield b" " * n if sent else b'{"summary":"' + b"x" * (n - 12)
            sent += n
    return gen


def dup_keys_body():
    text = json.dumps(valid_body())
    return (text[:-1] + ', "summary": "again"}').encode()


# id, method, path, key ("partner", "dashboard", "revoked", "unknown", None or an Authorization
# value), headers, body (bytes or a generator factory), status, field errors expected,
# response headers expected.
CASES = [
    ("malformed-json", "POST", "/v1/dossiers", "partner", {}, b'{"carrier": {"siret": ', 400, None, ()),
    ("empty-body", "POST", "/v1/dossiers", "partner", {}, b"", 400, None, ()),
    ("json-array", "POST", "/v1/dossiers", "partner", {}, dumps([valid_body()]), 400, None, ()),
    ("json-string", "POST", "/v1/dossiers", "partner", {}, b'"a dossier"', 400, None, ()),
    ("trailing-data", "POST", "/v1/dossiers", "partner", {}, dumps(valid_body()) + b" {}", 400,
     None, ()),
    ("json-null", "POST", "/v1/dossiers", "partner", {}, b"null", 400, None, ()),
    ("duplicate-keys", "POST", "/v1/dossiers", "partner", {}, dup_keys_body(), 400, None, ()),
    ("invalid-utf8", "POST", "/v1/dossiers", "partner", {},
     dumps(valid_body(summary="@@")).replace(b"@@", b"\xff\xfe"), 400, None, ()),
    ("nul-in-string", "POST", "/v1/dossiers", "partner", {}, dumps(valid_body(summary="a\u0000b")),
     400, None, ()),
    # Nested objects inside a well-formed dossier body (arrays would fail as "not an object"
    # whatever the depth handling does).
    ("too-deep", "POST", "/v1/dossiers", "partner", {},
     b'{"summary":' + b'{"a":' * 5000 + b"1" + b"}" * 5001, 400, None, ()),
    ("unknown-nested-keys", "POST", "/v1/dossiers", "partner", {},
     dumps(valid_body(carrier={"siret": "73282932000074", "name": "X", "extra": "x" * 100},
                      territory={"name": "Pays de Y", "region": "84", "x": 1},
                      members=[{"name": "a", "kind": "ess_enterprise", "role": "lead"},
                               {"name": "b", "kind": "other_enterprise"},
                               {"name": "c", "kind": "local_authority"}],
                      main_document={"filename": "d.pdf", "pages": 4, "url": "http://x"})), 400,
     ["carrier.extra", "territory.x", "members[0].role", "main_document.url"], ()),
    # partner_reference is a string or null: other values are named (an integer beyond int64,
    # which the fuzzing sent when it took any value, cannot even be read)
    ("partner-reference-not-text", "POST", "/v1/dossiers", "partner", {},
     dumps(valid_body(partner_reference={"id": 12})), 400, ["partner_reference"], ()),
    ("partner-reference-int65", "POST", "/v1/dossiers", "partner", {},
     dumps(valid_body(partner_reference=2 ** 64)), 400, None, ()),
    ("too-large", "POST", "/v1/dossiers", "partner", {},
     dumps(valid_body(summary="x" * (BODY_LIMIT + 10))), 413, None, ()),
    ("too-large-5mb", "POST", "/v1/dossiers", "partner", {}, b"x" * 5_000_000, 413, None, ()),
    ("too-large-chunked", "POST", "/v1/dossiers", "partner", {}, gen_chunks(BODY_LIMIT + 4096),
     413, None, ()),
    ("text-plain", "POST", "/v1/dossiers", "partner", {"Content-Type": "text/plain"},
     dumps(valid_body()), 415, None, ()),
    ("no-content-type", "POST", "/v1/dossiers", "partner", {"Content-Type": None},
     dumps(valid_body()), 415, None, ()),
    ("json-lookalike-type", "POST", "/v1/dossiers", "partner",
     {"Content-Type": "application/jsonx"}, dumps(valid_body()), 415, None, ()),
    ("no-idempotency-key", "POST", "/v1/dossiers", "partner", {"Idempotency-Key": None},
     dumps(valid_body()), 428, None, ()),
    ("idempotency-key-too-long", "POST", "/v1/dossiers", "partner", {"Idempotency-Key": "k" * 201},
     dumps(valid_body()), 400, None, ()),
    ("missing-carrier", "POST", "/v1/dossiers", "partner", {},
     dumps({k: v for k, v in valid_body().items() if k != "carrier"}), 400, ["carrier"], ()),
    ("bad-region", "POST", "/v1/dossiers", "partner", {},
     dumps(valid_body(territory={"name": "Pays de Y", "region": "05"})), 400,
     ["territory.region"], ()),
    ("bad-member-kind", "POST", "/v1/dossiers", "partner", {},
     dumps(valid_body(members=[{"name": "a", "kind": "ess_enterprise"},
                               {"name": "b", "kind": "multinational"}])), 400,
     ["members[1].kind"], ()),
    ("several-field-errors", "POST", "/v1/dossiers", "partner", {},
     dumps(valid_body(carrier={"name": ""}, summary=7, main_document={"filename": "d.pdf",
                                                                      "pages": 0},
                      unknown_field=1)), 400,
     ["carrier.siret", "carrier.name", "summary", "main_document.pages", "unknown_field"], ()),
    ("unknown-route", "POST", "/v1/dossierz", "partner", {}, dumps(valid_body()), 404, None, ()),
    ("wrong-method", "DELETE", "/v1/dossiers", "partner", {}, dumps(valid_body()), 405, None,
     ("Allow",)),
    ("no-authorization", "POST", "/v1/dossiers", None, {}, dumps(valid_body()), 401, None,
     ("WWW-Authenticate",)),
    ("basic-authorization", "POST", "/v1/dossiers", "Basic cGFydG5lcjpwYXJ0bmVy", {},
     dumps(valid_body()), 401, None, ("WWW-Authenticate",)),
    ("unknown-key", "POST", "/v1/dossiers", "unknown", {}, dumps(valid_body()), 401, None,
     ("WWW-Authenticate",)),
    ("revoked-key", "POST", "/v1/dossiers", "revoked", {}, dumps(valid_body()), 401, None,
     ("WWW-Authenticate",)),
    ("role-not-allowed", "POST", "/v1/dossiers", "expert", {}, dumps(valid_body()), 403, None, ()),
    # dashboard keys see aggregates only: a route with personal data does not exist for them
    ("role-hidden", "POST", "/v1/dossiers", "dashboard", {}, dumps(valid_body()), 404, None, ()),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_writes_nothing(case, urls, db, tokens):
    name, method, path, who, extra, body, code, fields, must_headers = case
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"bad-{name}-{uuid.uuid4()}"}
    if who in tokens:
        headers.update(bearer(tokens[who]))
    elif who:
        headers["Authorization"] = who
    for k, v in extra.items():
        if v is None:
            headers.pop(k, None)
        else:
            headers[k] = v
    data = body() if callable(body) else body
    if name == "no-content-type":
        # requests adds no Content-Type for bytes; make sure no default sneaks in either.
        assert "Content-Type" not in headers
    before = counts(db)
    r = requests.request(method, urls["submission"] + path, data=data, headers=headers, timeout=30)
    doc = assert_problem(r, code, path)
    if name == "too-deep":  # refused by the parser's depth limit, not for its shape
        assert "depth" in doc["detail"], doc
    if code == 400 and not fields:  # malformed bodies and bad headers name no field
        assert "errors" not in doc, doc
    if fields:
        errors = doc.get("errors")
        assert isinstance(errors, list) and errors, f"no errors array: {doc}"
        named = {e.get("field") for e in errors}
        assert all(isinstance(e.get("message"), str) and e["message"] for e in errors), errors
        missing = [f for f in fields if f not in named]
        assert not missing, f"fields {missing} not named in {errors}"
    for h in must_headers:
        assert r.headers.get(h), f"no {h} header"
    if code == 405:
        allowed = {m.strip() for m in r.headers["Allow"].split(",")}
        assert {"GET", "POST"} <= allowed and method not in allowed, r.headers["Allow"]
    if code == 401:
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="ptce"'
    assert counts(db) == before, f"{name}: rows written by a refused request"


def test_create_replay_and_conflicting_reuse(urls, db, partner, admin_key):
    url = urls["submission"] + "/v1/dossiers"
    idem = f"create-{uuid.uuid4()}"
    body = dumps(valid_body(summary=f"replay test {idem}"))
    headers = {**bearer(partner), "Content-Type": "application/json", "Idempotency-Key": idem}
    before = counts(db)

    r = requests.post(url, data=body, headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    created = r.json()
    did = created["id"]
    uuid.UUID(did)
    assert r.headers["Location"] == f"/v1/dossiers/{did}"
    assert "Idempotent-Replayed" not in r.headers
    assert created["origin"] == "partner" and created["state"] == "deposited"
    assert created["region"] == "84" and created["eligibility"] == "eligible"
    after = counts(db)
    assert tuple(a - b for a, b in zip(after, before)) == (1, 1, 1), (before, after)

    def rows_for_key():
        return (sql(db, "SELECT count(*) FROM submission.dossier WHERE partner_key_id = %s"
                        " AND id = %s", key_id(partner), did)[0][0],
                sql(db, "SELECT count(*) FROM submission.idempotency_request WHERE key_id = %s"
                        " AND key = %s", key_id(partner), idem)[0][0],
                sql(db, "SELECT count(*), min(type) FROM submission.outbox WHERE key = %s", did)[0])
    assert rows_for_key() == (1, 1, (1, "dossier.deposited"))

    r = requests.post(url, data=body, headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    assert r.headers.get("Idempotent-Replayed") == "true"
    assert r.json()["id"] == did and r.headers["Location"] == f"/v1/dossiers/{did}"
    assert r.json() == created
    assert counts(db) == after

    other = dumps(valid_body(summary=f"another body {idem}"))
    r = requests.post(url, data=other, headers=headers, timeout=10)
    doc = assert_problem(r, 422)
    assert "Idempotency-Key" in doc["detail"]
    assert counts(db) == after
    assert rows_for_key() == (1, 1, (1, "dossier.deposited"))

    # The dossier is readable by an administrator, and reaches instruction through Kafka.
    r = requests.get(urls["submission"] + f"/v1/dossiers/{did}", headers=bearer(admin_key),
                     timeout=10)
    assert r.status_code == 200 and r.json()["id"] == did
    wait_until(lambda: sql(db, "SELECT events_applied FROM instruction.dossier WHERE id = %s",
                           did) == [(1,)], timeout=20, what="instruction to apply the deposit")


def test_idempotency_key_is_per_api_key(urls, db, partner, keys):
    url = urls["submission"] + "/v1/dossiers"
    idem = f"shared-{uuid.uuid4()}"
    body = dumps(valid_body(summary=f"two partners {idem}"))
    other = keys.create("partner")
    ids = []
    before = counts(db)
    for token in (partner, other):
        r = requests.post(url, data=body, timeout=10, headers={
            **bearer(token), "Content-Type": "application/json", "Idempotency-Key": idem})
        assert r.status_code == 201, r.text
        assert "Idempotent-Replayed" not in r.headers
        ids.append(r.json()["id"])
    assert ids[0] != ids[1]
    assert tuple(a - b for a, b in zip(counts(db), before)) == (2, 2, 2)


def test_concurrent_retries_create_one_dossier(urls, db, partner):
    url = urls["submission"] + "/v1/dossiers"
    idem = f"race-{uuid.uuid4()}"
    body = dumps(valid_body(summary=f"concurrent {idem}"))
    headers = {**bearer(partner), "Content-Type": "application/json", "Idempotency-Key": idem}
    before = counts(db)
    results = []
    go = threading.Barrier(8)

    def attempt():
        go.wait(timeout=10)
        r = requests.post(url, data=body, headers=headers, timeout=15)
        results.append((r.status_code, r.json().get("id"), r.headers.get("Idempotent-Replayed")))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8, results
    # Each answer is the one creation (201, the first or its replay) or, for a twin that came
    # while the first was still in flight, 409 at once; exactly one dossier was created.
    assert {r[0] for r in results} <= {201, 409} and 201 in {r[0] for r in results}, results
    assert len({r[1] for r in results if r[0] == 201}) == 1, results
    assert sum(1 for r in results if r[0] == 201 and r[2] != "true") == 1, results
    assert tuple(a - b for a, b in zip(counts(db), before)) == (1, 1, 1)
    # A retry once the first has answered replays it.
    r = requests.post(url, data=body, headers=headers, timeout=15)
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") == "true", r.text


def deposit_metric(url, name):
    """A counter of submission's /metrics (0 when absent)."""
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


def test_concurrent_deposits_commit_in_batches(urls, db, admin_url, partner):
    """Deposits that arrive together are written by one transaction (a group commit): each
    gets its own dossier and its own stored answer, and twins under one key still create one
    dossier, the batch they came in taken one deposit at a time. The dossier table is held
    (SHARE: no insert) while they arrive, so that they do arrive together: on a loaded
    machine the 48 threads' requests could otherwise come one batch apart (CI saw 44 batches
    for 41 deposits)."""
    base = urls["submission"]
    url = base + "/v1/dossiers"
    run = uuid.uuid4()
    twin_key = f"twin-{run}"
    before = counts(db)
    batches0 = deposit_metric(base, "ptce_deposit_batches_total")
    batched0 = deposit_metric(base, "ptce_deposit_batched_total")
    results = {}
    go = threading.Barrier(48)

    def attempt(i):
        key = twin_key if i >= 40 else f"many-{run}-{i}"
        body = dumps(valid_body(summary=f"batch {run} {'twin' if i >= 40 else i}"))
        headers = {**bearer(partner), "Content-Type": "application/json", "Idempotency-Key": key}
        go.wait(timeout=10)
        r = requests.post(url, data=body, headers=headers, timeout=15)
        results[i] = (r.status_code, r.json().get("id"), r.headers.get("Idempotent-Replayed"),
                      r.headers.get("Location"), key, body)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(48)]
    with psycopg.connect(admin_url) as hold:
        hold.execute("LOCK TABLE submission.dossier IN SHARE MODE")
        for t in threads:
            t.start()
        time.sleep(1.5)  # the writers wait on the lock, the other deposits queue behind them
    for t in threads:
        t.join(30)
    assert len(results) == 48, results
    alone = [results[i] for i in range(40)]
    assert all(r[0] == 201 and r[2] is None for r in alone), alone
    assert len({r[1] for r in alone}) == 40
    twins = [results[i] for i in range(40, 48)]
    assert {r[0] for r in twins} <= {201, 409}, twins
    assert len({r[1] for r in twins if r[0] == 201}) == 1, twins
    assert sum(1 for r in twins if r[0] == 201 and r[2] != "true") == 1, twins
    assert tuple(a - b for a, b in zip(counts(db), before)) == (41, 41, 41)
    # each answer is its own dossier, stored as the key's answer, with one event of its own
    for status, did, _, location, key, body in alone[:10]:
        assert location == f"/v1/dossiers/{did}"
        assert json.loads(body)["summary"] in requests.get(
            base + location, headers=bearer(partner), timeout=10).text
        again = requests.post(url, data=body, timeout=15, headers={
            **bearer(partner), "Content-Type": "application/json", "Idempotency-Key": key})
        assert again.status_code == 201 and again.json()["id"] == did
        assert again.headers.get("Idempotent-Replayed") == "true"
    assert sql(db, "SELECT count(*) FROM submission.outbox WHERE type = 'dossier.deposited'"
                   " AND key = ANY(%s)", [r[1] for r in alone])[0][0] == 40
    # and they were committed in batches: fewer commits than deposits
    batches = deposit_metric(base, "ptce_deposit_batches_total") - batches0
    batched = deposit_metric(base, "ptce_deposit_batched_total") - batched0
    assert batched >= 30 and batches < batched, (batches, batched)


def test_concurrent_reads_each_get_their_own_answer(urls, partner, keys):
    """GET /v1/dossiers/{id} requests that arrive together are read with one statement: each
    must still get its own dossier, or 404 when it is absent or outside the reader's scope."""
    url = urls["submission"] + "/v1/dossiers"
    ids = {}
    for region in ("84", "11"):
        ids[region] = []
        for i in range(3):
            r = requests.post(url, data=dumps(valid_body(
                territory={"name": f"T{i}", "region": region}, summary=f"read {region} {i}")),
                headers={**bearer(partner), "Content-Type": "application/json",
                         "Idempotency-Key": f"read-{uuid.uuid4()}"}, timeout=10)
            assert r.status_code == 201, r.text
            ids[region].append(r.json()["id"])
    key84 = keys.create("regional_instructor", "84")
    stranger = keys.create("partner")
    cases = []
    for did in ids["84"]:
        cases += [(key84, did, 200), (partner, did, 200), (stranger, did, 404)]
    for did in ids["11"]:
        cases += [(key84, did, 404), (partner, did, 200)]
    cases += [(key84, str(uuid.uuid4()), 404), (partner, str(uuid.uuid4()), 404)]
    cases *= 3  # the same dossier asked several times in one batch, too
    results = [None] * len(cases)
    go = threading.Barrier(len(cases))

    def read(i, token, did):
        go.wait(timeout=20)
        r = requests.get(f"{url}/{did}", headers=bearer(token), timeout=15)
        results[i] = (r.status_code, r.json().get("id") if r.status_code == 200 else None)

    threads = [threading.Thread(target=read, args=(i, t, d)) for i, (t, d, _) in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for (token, did, code), got in zip(cases, results):
        expected = (code, did if code == 200 else None)
        assert got == expected, (did, got, expected)
    # A UUID in upper case names the same dossier.
    r = requests.get(f"{url}/{ids['84'][0].upper()}", headers=bearer(key84), timeout=10)
    assert r.status_code == 200 and r.json()["id"] == ids["84"][0], r.text


@pytest.mark.parametrize("service", SERVICES)
def test_probes(urls, service):
    base = urls[service]
    r = requests.get(base + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "ok"}
    assert r.headers.get("X-Request-Id")

    r = requests.get(base + "/readyz", timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "ready", "checks": {"database": True, "kafka": True}}

    r = requests.get(base + "/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert "# TYPE ptce_http_requests_total counter" in lines
    healthz = [ln for ln in lines if ln.startswith(
        'ptce_http_requests_total{method="GET",route="/healthz",status="200"} ')]
    assert healthz and int(healthz[0].split()[-1]) >= 1, "the /healthz call above is not counted"
    assert any(ln.startswith("ptce_db_pool_connections{") for ln in lines)
    for ln in lines:  # every sample line is "name{labels} value"
        if ln and not ln.startswith("#"):
            float(ln.rsplit(" ", 1)[1])
