"""The running services answer as api-spec/openapi.yaml says, and publish what asyncapi.yaml says.

Every real answer below is checked against the document: its status is one the operation
documents, each documented header marked required is there and matches its schema, and the body
validates (JSON Schema 2020-12, $refs resolved inside the document) against the documented
schema of that status and media type. Answers that no operation owns (unmatched path, unknown
method) are checked against the spec's x-ptce-unmatched-responses. The route tables of the C
code and the paths of the spec must list the same operations, and the events the submission
service wrote to its outbox must validate against their AsyncAPI message payloads.
"""
import base64
import copy
import json
import os
import random
import re
import uuid

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from conftest import ROOT, bearer, sql, wait_until

SPEC_DIR = os.path.join(ROOT, "api-spec")
OPENAPI_URI = "file://" + os.path.join(SPEC_DIR, "openapi.yaml")
ASYNCAPI_URI = "file://" + os.path.join(SPEC_DIR, "asyncapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
TIMEOUT = 15


def load_yaml(name):
    with open(os.path.join(SPEC_DIR, name), encoding="utf-8") as f:
        return yaml.safe_load(f)


SPEC = load_yaml("openapi.yaml")
ASYNCAPI = load_yaml("asyncapi.yaml")
REGISTRY = Registry().with_resources([
    (OPENAPI_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)),
    (ASYNCAPI_URI, Resource.from_contents(ASYNCAPI, default_specification=DRAFT202012)),
])


def escape(token):
    """One JSON-pointer reference token."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer_get(doc, pointer):
    node = doc
    for token in pointer.lstrip("/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def deref(node, pointer):
    """Follows local $refs of the spec (responses, headers); returns (node, its pointer)."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local references are expected, not {ref}"
        pointer = ref[1:]
        node = pointer_get(SPEC, pointer)
    return node, pointer


def schema_errors(uri, pointer, instance):
    validator = Draft202012Validator({"$ref": f"{uri}#{pointer}"}, registry=REGISTRY,
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(instance)]


def check_response(resp, responses, where, pointer):
    """Checks one HTTP answer against a responses object found at pointer in the spec."""
    status = str(resp.status_code)
    key = status if status in responses else f"{status[0]}XX" if f"{status[0]}XX" in responses \
        else "default" if "default" in responses else None
    assert key, f"{where} answered {status}, which the spec does not document " \
                f"(documented: {sorted(responses)}); body: {resp.text[:300]}"
    response, rpointer = deref(responses[key], f"{pointer}/{escape(key)}")
    for name, header in (response.get("headers") or {}).items():
        header, hpointer = deref(header, f"{rpointer}/headers/{escape(name)}")
        value = resp.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{where} {status}: required header {name} missing"
            continue
        errors = schema_errors(OPENAPI_URI, f"{hpointer}/schema", value)
        assert not errors, f"{where} {status}: header {name}: {value!r}: {errors}"
    content = response.get("content") or {}
    if not content:
        return None
    ctype = resp.headers.get("Content-Type", "")
    media = ctype if ctype in content else ctype.split(";")[0].strip()
    assert media in content, f"{where} {status}: Content-Type {ctype!r} is not one of {list(content)}"
    if not (media.endswith("json") or media.endswith("+json")):
        return resp.text
    body = resp.json()
    errors = schema_errors(OPENAPI_URI, f"{rpointer}/content/{escape(media)}/schema", body)
    assert not errors, f"{where} {status}: the body does not match the spec:\n  " + \
                       "\n  ".join(errors) + f"\nbody: {json.dumps(body)[:2000]}"
    return body


def conform(resp, path, method):
    """Checks resp as an answer of the operation (path template, method); returns the body."""
    assert path in SPEC["paths"], f"{path} is not in the spec"
    op = SPEC["paths"][path].get(method)
    assert op, f"{method.upper()} {path} is not in the spec"
    pointer = f"/paths/{escape(path)}/{method}/responses"
    return check_response(resp, op["responses"], f"{method.upper()} {path}", pointer)


def conform_unmatched(resp):
    """An answer that no operation owns: 404 for an unknown path, 405 for an unknown method."""
    return check_response(resp, SPEC["x-ptce-unmatched-responses"], "(no route)",
                          "/x-ptce-unmatched-responses")


# ---- the route tables of the code ----

def c_routes(path, table):
    """(METHOD, pattern) pairs of a `struct http_route table[] = {...}` in a C file."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    match = re.search(rf"\b{table}\[\]\s*=\s*\{{(.*?)\n\}};", text, re.S)
    assert match, f"no table {table} in {path}"
    return set(re.findall(r'\{\s*"([A-Z]+)",\s*"([^"]+)"', match.group(1)))


def spec_full_path(path, item):
    """The path as served: a path-level server's base path (instruction's `/v1`) + the key."""
    servers = item.get("servers") or []
    base = re.sub(r"^[a-z]+://[^/]+", "", servers[0]["url"]) if servers else ""
    return base.rstrip("/") + path


def test_code_routes_and_spec_operations_are_the_same():
    code = c_routes("common/service.c", "service_probe_routes") | \
        c_routes("services/submission/routes.c", "submission_routes") | \
        c_routes("services/funding/support.c", "support_routes") | \
        c_routes("services/funding/routes.c", "funding_routes") | \
        {(m, "[instruction]" + p) for m, p in
         c_routes("services/instruction/routes.c", "instruction_routes")}
    spec = {(method.upper(), ("[instruction]" if ":8082" in str(item.get("servers")) else "") +
             spec_full_path(path, item))
            for path, item in SPEC["paths"].items() for method in item if method in METHODS}
    assert len(code) >= 10, f"the route tables were not read: {sorted(code)}"
    assert code - spec == set(), f"routes missing from api-spec/openapi.yaml: {sorted(code - spec)}"
    assert spec - code == set(), f"operations of the spec the code lacks: {sorted(spec - code)}"


# ---- calls ----

@pytest.fixture(scope="module")
def admin(keys):
    return bearer(keys.create("national_admin"))


@pytest.fixture(scope="module")
def partner(keys):
    return bearer(keys.create("partner"))


@pytest.fixture(scope="module")
def instructor_11(keys):
    return bearer(keys.create("regional_instructor", regions="11"))


@pytest.fixture(scope="module")
def sub(urls):
    return urls["submission"]


def partner_body(**changes):
    body = {
        "ptce_name": "PTCE du Val",
        "carrier": {"siret": "73282932000074", "name": "Pôle du Val", "legal_form": "Association"},
        "territory": {"name": "Vallée du Rhône", "region": "84"},
        "members": [
            {"name": "Coop A", "siret": "73282932000074", "kind": "ess_enterprise"},
            {"name": "SARL B", "kind": "other_enterprise"},
            {"name": "Commune C", "kind": "local_authority"},
        ],
        "summary": "A cooperation pole around the valley's food chain.",
        "main_document": {"filename": "dossier.pdf", "pages": 8},
        "legal_person_private": True,
        "prior_state_support": False,
    }
    body.update(changes)
    return body


def test_probes_of_the_three_services(urls):
    for name, url in urls.items():
        body = conform(requests.get(url + "/healthz", timeout=TIMEOUT), "/healthz", "get")
        assert body == {"status": "ok"}, name
        ready = conform(requests.get(url + "/readyz", timeout=TIMEOUT), "/readyz", "get")
        assert ready["status"] == "ready", f"{name}: {ready}"
        text = conform(requests.get(url + "/metrics", timeout=TIMEOUT), "/metrics", "get")
        assert "ptce_http_requests_total" in text, name


def test_unmatched_path_and_method(sub, admin):
    rid = f"conformance-{uuid.uuid4()}"
    r = requests.get(sub + "/v1/no-such-thing", headers={"X-Request-Id": rid}, timeout=TIMEOUT)
    body = conform_unmatched(r)
    assert r.status_code == 404 and r.headers["X-Request-Id"] == rid and body["request_id"] == rid
    assert body["instance"] == "/v1/no-such-thing"
    r = requests.delete(sub + "/v1/dossiers", headers=admin, timeout=TIMEOUT)
    conform_unmatched(r)
    assert r.status_code == 405 and r.headers["Allow"] == "POST, GET"


def test_partner_deposit_read_list_history(sub, partner, admin, instructor_11, db, keys):
    key = str(uuid.uuid4())
    body = partner_body(partner_reference="conformance")
    raw = json.dumps(body)
    headers = {**partner, "Content-Type": "application/json", "Idempotency-Key": key}

    r = requests.post(sub + "/v1/dossiers", data=raw, headers=headers, timeout=TIMEOUT)
    created = conform(r, "/v1/dossiers", "post")
    assert r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    assert r.headers["Location"] == f"/v1/dossiers/{created['id']}"
    assert created["origin"] == "partner" and created["state"] == "deposited"
    assert created["ptce_name"] == created["title"] == "PTCE du Val"

    r = requests.post(sub + "/v1/dossiers", data=raw, headers=headers, timeout=TIMEOUT)
    assert conform(r, "/v1/dossiers", "post") == created
    assert r.headers["Idempotent-Replayed"] == "true"
    r = requests.post(sub + "/v1/dossiers", data=json.dumps(partner_body(summary="other")),
                      headers=headers, timeout=TIMEOUT)
    conform(r, "/v1/dossiers", "post")
    assert r.status_code == 422

    # The partner reads back what it deposited, and nothing another partner deposited.
    r = requests.get(sub + f"/v1/dossiers/{created['id']}", headers=partner, timeout=TIMEOUT)
    assert conform(r, "/v1/dossiers/{id}", "get") == created
    other_partner = bearer(keys.create("partner"))
    r = requests.get(sub + f"/v1/dossiers/{created['id']}", headers=other_partner, timeout=TIMEOUT)
    conform(r, "/v1/dossiers/{id}", "get")
    assert r.status_code == 404
    r = requests.get(sub + f"/v1/dossiers/{created['id']}", headers=admin, timeout=TIMEOUT)
    assert conform(r, "/v1/dossiers/{id}", "get") == created
    # Out of the key's regions looks exactly like absent.
    r = requests.get(sub + f"/v1/dossiers/{created['id']}", headers=instructor_11, timeout=TIMEOUT)
    conform(r, "/v1/dossiers/{id}", "get")
    assert r.status_code == 404
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        r = requests.get(sub + f"/v1/dossiers/{missing}", headers=admin, timeout=TIMEOUT)
        conform(r, "/v1/dossiers/{id}", "get")
        assert r.status_code == 404

    r = requests.get(sub + f"/v1/dossiers/{created['id']}/history", headers=admin, timeout=TIMEOUT)
    history = conform(r, "/v1/dossiers/{id}/history", "get")
    assert r.status_code == 200 and [h["kind"] for h in history] == ["deposited"]

    # A second deposit, so that a page of one has a next page.
    headers2 = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    r = requests.post(sub + "/v1/dossiers", json=partner_body(ptce_name=None), headers=headers2,
                      timeout=TIMEOUT)
    second = conform(r, "/v1/dossiers", "post")
    assert second["ptce_name"] is None and second["title"] == "Vallée du Rhône"
    r = requests.get(sub + "/v1/dossiers", params={"limit": 1, "region": "84", "state": "deposited"},
                     headers=admin, timeout=TIMEOUT)
    page = conform(r, "/v1/dossiers", "get")
    assert r.status_code == 200 and len(page["items"]) == 1 and page["next_cursor"]
    r = requests.get(sub + "/v1/dossiers", headers=admin, timeout=TIMEOUT,
                     params={"cursor": page["next_cursor"], "eligibility": created["eligibility"],
                             "updated_since": "2020-01-01T00:00:00Z", "wave": created["wave"]})
    conform(r, "/v1/dossiers", "get")
    assert r.status_code == 200

    rows = sql(db, "SELECT payload FROM submission.outbox WHERE key = %s ORDER BY id", created["id"])
    assert len(rows) == 1
    check_event(json.loads(rows[0][0]), "dossier.deposited")


def test_problems_of_dossier_operations(sub, partner, admin):
    url = sub + "/v1/dossiers"
    r = requests.get(url, params={"limit": 0, "region": "05", "state": "x", "eligibility": "maybe",
                                  "cursor": "abc", "updated_since": "yesterday"},
                     headers=admin, timeout=TIMEOUT)
    body = conform(r, "/v1/dossiers", "get")
    assert r.status_code == 400
    assert {e["field"] for e in body["errors"]} == \
        {"limit", "region", "state", "eligibility", "cursor", "updated_since"}

    r = requests.get(url, timeout=TIMEOUT)
    conform(r, "/v1/dossiers", "get")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="ptce"'
    r = requests.get(url, headers=partner, timeout=TIMEOUT)
    conform(r, "/v1/dossiers", "get")
    assert r.status_code == 403

    headers = {**partner, "Idempotency-Key": str(uuid.uuid4())}
    invalid = {"carrier": {"siret": ""}, "territory": {"region": "05"},
               "members": [{"kind": "nope"}], "bogus": 1}
    cases = [  # (headers, request arguments, expected status)
        (partner, {"json": partner_body()}, 428),
        ({**headers, "Content-Type": "text/plain"}, {"data": "{}"}, 415),
        ({**headers, "Content-Type": "application/json"}, {"data": '{"carrier": '}, 400),
        (headers, {"json": invalid}, 400),
        # Over PTCE_HTTP_BODY_LIMIT, whether the tests' 64 KiB or the default 1 MiB.
        ({**headers, "Content-Type": "application/json"}, {"data": "x" * 1100000}, 413),
    ]
    answers = []
    for hdrs, kwargs, expected in cases:
        r = requests.post(url, headers=hdrs, timeout=TIMEOUT, **kwargs)
        answers.append(conform(r, "/v1/dossiers", "post"))
        assert r.status_code == expected, answers[-1]
    fields = {e["field"] for e in answers[3]["errors"]}
    assert {"carrier.siret", "carrier.name", "territory.name", "territory.region",
            "members[0].name", "members[0].kind", "summary", "bogus"} == fields
    assert "errors" not in answers[2]


def test_waves(sub, admin, partner):
    r = requests.get(sub + "/v1/waves", headers=partner, timeout=TIMEOUT)
    waves = conform(r, "/v1/waves", "get")
    assert r.status_code == 200 and any(w["id"] == "2026" for w in waves)

    wave_id = f"c{uuid.uuid4().hex[:12]}"
    wave = {"id": wave_id, "label": "Conformance wave", "deposit_opens_at": "2001-01-01T00:00:00Z",
            "deposit_closes_at": "2001-06-30 00:00:00 +0200", "phase2_slots": 3,
            "amount_per_laureate_cents": 10000000}
    r = requests.post(sub + "/v1/waves", json=wave, headers=admin, timeout=TIMEOUT)
    created = conform(r, "/v1/waves", "post")
    assert r.status_code == 201 and created["id"] == wave_id
    r = requests.post(sub + "/v1/waves", json=wave, headers=admin, timeout=TIMEOUT)
    conform(r, "/v1/waves", "post")
    assert r.status_code == 409
    r = requests.post(sub + "/v1/waves", json={"id": "bad id!", "phase2_slots": -1},
                      headers=admin, timeout=TIMEOUT)
    body = conform(r, "/v1/waves", "post")
    assert r.status_code == 400 and {e["field"] for e in body["errors"]} == \
        {"id", "label", "deposit_opens_at", "phase2_slots", "amount_per_laureate_cents"}
    r = requests.post(sub + "/v1/waves", json=wave, headers=partner, timeout=TIMEOUT)
    conform(r, "/v1/waves", "post")
    assert r.status_code == 403


def test_wave_published_events(sub, admin, partner, db):
    """Waves reach instruction and funding as wave.published: one per wave, the seed one too."""
    wave = {"id": f"e{uuid.uuid4().hex[:12]}", "label": "Published wave",
            "deposit_opens_at": "2002-01-01T00:00:00Z", "phase2_slots": 2,
            "amount_per_laureate_cents": 10000000}
    r = requests.post(sub + "/v1/waves", json=wave, headers=admin, timeout=TIMEOUT)
    created = conform(r, "/v1/waves", "post")
    assert r.status_code == 201
    rows = sql(db, "SELECT key, payload FROM submission.outbox WHERE type = 'wave.published'")
    by_wave = {}
    for key, payload in rows:
        event = json.loads(payload)
        check_event(event, "wave.published")
        assert event["subject"] == key == event["data"]["wave"]["id"]
        by_wave.setdefault(key, []).append(event)
    assert len(by_wave["2026"]) == 1, "the seed wave is published once, by its migration"
    assert [e["data"]["wave"] for e in by_wave[created["id"]]] == [created]


# ---- the DS webhook, and a DS dossier through its three events ----

def ds_fixture(number):
    with open(os.path.join(ROOT, "tests", "dsfake", "fixtures", "dossiers", "1001.json"),
              encoding="utf-8") as f:
        dossier = json.load(f)
    dossier.pop("_comment", None)
    dossier["number"] = number
    dossier["id"] = base64.b64encode(f"Dossier-{number}".encode()).decode()
    return dossier


def webhook(sub, token, number, state, updated_at, *, in_query=False):
    fields = {"procedure_id": "12345", "dossier_id": str(number), "state": state,
              "updated_at": updated_at}
    url = f"{sub}/v1/webhooks/ds/{token}"
    if in_query:
        return requests.post(url, params=fields, timeout=TIMEOUT)
    return requests.post(url, data=fields, timeout=TIMEOUT)


def test_ds_webhook_and_dossier_events(sub, admin, dsfake, db):
    token = os.environ.get("PTCE_DS_WEBHOOK_TOKEN") or pytest.fail("PTCE_DS_WEBHOOK_TOKEN unset")
    path = "/v1/webhooks/ds/{token}"
    number = random.randint(900000, 999999)
    fixture = ds_fixture(number)
    dsfake.post("/_control/dossiers", fixture)

    r = webhook(sub, token, number, "en_construction", "2021-06-01 09:15:00 +0200")
    assert conform(r, path, "post") == {"status": "accepted", "duplicate": False}
    assert r.status_code == 202
    r = webhook(sub, token, number, "en_construction", "2021-06-01 09:15:00 +0200", in_query=True)
    assert conform(r, path, "post") == {"status": "accepted", "duplicate": True}

    r = webhook(sub, "not-the-token", number, "en_construction", "2021-06-01 09:15:00 +0200")
    conform(r, path, "post")
    assert r.status_code == 404
    r = requests.post(f"{sub}/v1/webhooks/ds/{token}", timeout=TIMEOUT,
                      data={"procedure_id": "x", "dossier_id": "-1", "state": "draft",
                            "updated_at": "soon"})
    body = conform(r, path, "post")
    assert r.status_code == 400 and {e["field"] for e in body["errors"]} == \
        {"procedure_id", "dossier_id", "state", "updated_at"}
    r = requests.post(f"{sub}/v1/webhooks/ds/{token}", timeout=TIMEOUT,
                      data={"procedure_id": "99999", "dossier_id": str(number),
                            "state": "en_construction", "updated_at": "2021-06-01T07:15:00Z"})
    conform(r, path, "post")
    assert r.status_code == 422
    r = requests.post(f"{sub}/v1/webhooks/ds/{token}", data=b"{}", timeout=TIMEOUT,
                      headers={"Content-Type": "application/json"})
    conform(r, path, "post")
    assert r.status_code == 415

    def stored(version):
        rows = sql(db, "SELECT id, version FROM submission.dossier WHERE ds_number = %s", number)
        return rows[0][0] if rows and rows[0][1] >= version else None

    dossier_id = str(wait_until(lambda: stored(1), what=f"DS dossier {number} to be stored"))
    r = requests.get(f"{sub}/v1/dossiers/{dossier_id}", headers=admin, timeout=TIMEOUT)
    doc = conform(r, "/v1/dossiers/{id}", "get")
    assert doc["origin"] == "ds" and doc["ds_number"] == number
    assert doc["title"] == doc["ptce_name"] == "PTCE Réemploi du Val"  # the "Nom du pôle" champ
    assert doc["carrier"]["legal_category"] == "9220"

    # A newer version on DS, notified: dossier.updated.
    fixture.update(state="en_instruction", datePassageEnInstruction="2021-06-02T10:00:00+02:00",
                   dateDerniereModification="2021-06-02T10:00:00+02:00")
    dsfake.post("/_control/dossiers", fixture)
    r = webhook(sub, token, number, "en_instruction", "2021-06-02T10:00:00+02:00")
    conform(r, path, "post")
    wait_until(lambda: stored(2), what=f"DS dossier {number} version 2")

    # Deleted on DS, found by the reconciliation poller: dossier.withdrawn.
    dsfake.delete(f"/_control/dossiers/{number}", {"reason": "user_request"})
    wait_until(lambda: sql(db, "SELECT 1 FROM submission.dossier WHERE ds_number = %s"
                               " AND state = 'withdrawn'", number),
               what=f"DS dossier {number} to be withdrawn")
    r = requests.get(f"{sub}/v1/dossiers/{dossier_id}/history", headers=admin, timeout=TIMEOUT)
    history = conform(r, "/v1/dossiers/{id}/history", "get")
    assert [h["kind"] for h in history] == ["ds.deposited", "ds.updated", "ds.deleted"]

    rows = sql(db, "SELECT type, payload FROM submission.outbox WHERE key = %s ORDER BY id",
               dossier_id)
    assert [t for t, _ in rows] == ["dossier.deposited", "dossier.updated", "dossier.withdrawn"]
    for event_type, payload in rows:
        check_event(json.loads(payload), event_type)


# ---- events against asyncapi.yaml ----

def message_pointer(event_type):
    """The pointer to the payload schema of the AsyncAPI message named event_type."""
    for key, message in ASYNCAPI["components"]["messages"].items():
        if message.get("name") == event_type:
            payload = message["payload"]
            if "$ref" in payload:
                assert payload["$ref"].startswith("#/")
                return payload["$ref"][1:]
            return f"/components/messages/{escape(key)}/payload"
    pytest.fail(f"no message named {event_type} in api-spec/asyncapi.yaml")


def check_event(event, event_type):
    assert event["type"] == event_type
    errors = schema_errors(ASYNCAPI_URI, message_pointer(event_type), event)
    assert not errors, f"{event_type} does not match api-spec/asyncapi.yaml:\n  " + \
                       "\n  ".join(errors) + f"\nevent: {json.dumps(event)[:2000]}"


def test_asyncapi_channels_are_the_code_topics():
    topics = set()
    for path in ("services/submission/store.h", "services/instruction/events.h",
                 "services/funding/events.h"):
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            topics |= set(re.findall(r'#define \w+_TOPIC "([^"]+)"', f.read()))
    channels = {c["address"] for c in ASYNCAPI["channels"].values()}
    assert topics == channels == {"ptce.submission.events", "ptce.instruction.events",
                                  "ptce.funding.events"}
