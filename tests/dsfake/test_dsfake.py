"""Tests of the démarches-simplifiées fake (dsfake.py), its fixtures and our DS documents.

The fake runs in a subprocess, as the C service's tests will run it. Every GraphQL request
sends services/submission/ds_queries.graphql (or instruction's ds_mutations.graphql) whole,
with an operationName: so these tests also prove that the documents of the services validate
against DS's published schema and that ds_mapping.json finds what it expects in the answers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from graphql import OperationDefinitionNode, build_schema, parse, validate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DSFAKE = HERE / "dsfake.py"
FIXTURES = HERE / "fixtures"
QUERIES_PATH = REPO / "services" / "submission" / "ds_queries.graphql"
MUTATIONS_PATH = REPO / "services" / "instruction" / "ds_mutations.graphql"
MAPPING_PATH = REPO / "services" / "submission" / "ds_mapping.json"
LEGAL_MAPPING_PATH = FIXTURES / "ds_mapping_legal.json"
SCHEMA_PATH = REPO.parent / "shared" / "ds" / "schema.graphql"

TOKEN = "test-token"
EXPIRED_TOKEN = "expired-token"
DEMARCHE = 12345
LEGAL_DEMARCHE = 23456  # opened to legal persons: the carrier is the demandeur
QUERIES = QUERIES_PATH.read_text(encoding="utf-8")
MUTATIONS = MUTATIONS_PATH.read_text(encoding="utf-8")
INSTRUCTEUR = base64.b64encode(b"Instructeur-1").decode()  # the fake's default instructeur
MAPPING = json.loads(MAPPING_PATH.read_text(encoding="utf-8"))
LEGAL_MAPPING = json.loads(LEGAL_MAPPING_PATH.read_text(encoding="utf-8"))


def load_make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_fixtures = load_make_fixtures()


# --------------------------------------------------------------------------------------
# The fake, started once for the module and reset before every test.
# --------------------------------------------------------------------------------------


class Fake:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def graphql(self, operation: str, variables: dict, token: str | None = TOKEN, query: str = QUERIES,
                timeout: float = 10) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"query": query, "operationName": operation, "variables": variables}
        return requests.post(f"{self.base}/api/v2/graphql", json=body, headers=headers, timeout=timeout)

    def data(self, operation: str, variables: dict) -> dict:
        response = self.graphql(operation, variables)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def control(self, method: str, path: str, body: object = None) -> requests.Response:
        return requests.request(method, f"{self.base}/_control/{path}", json=body, timeout=10)

    def dossier(self, number: int) -> dict:
        return self.data("getDossier", {"number": number})["dossier"]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    if not SCHEMA_PATH.is_file():
        pytest.fail(f"DS schema not found at {SCHEMA_PATH}: the fake reads it at run time")
    stderr_path = tmp_path_factory.mktemp("dsfake") / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(DSFAKE), "--port", "0", "--token", TOKEN, "--expired-token", EXPIRED_TOKEN],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
    try:
        # Wait for "READY <port>"; a fake that dies or hangs fails the suite with its log.
        ready, _, _ = select.select([process.stdout], [], [], 20)
        line = process.stdout.readline() if ready else ""
        match = re.fullmatch(r"READY (\d+)\n", line)
        if not match:
            process.kill()
            pytest.fail(f"dsfake did not start: {line!r}\n{stderr_path.read_text()}")
        yield Fake(int(match.group(1)))
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(autouse=True)
def reset(request):
    """Give each test the fixtures as on disk, no fault, zeroed stats."""
    if "fake" in request.fixturenames:
        fake = request.getfixturevalue("fake")
        assert fake.control("POST", "reset").status_code == 200


# --------------------------------------------------------------------------------------
# Helpers: apply ds_mapping.json to a getDossier answer, as the C client will.
# --------------------------------------------------------------------------------------


def path_get(node, path: str):
    """Follow a ds_mapping.json path ("a.b", "files[0]") in a JSON answer; None if absent."""
    for part in path.split("."):
        match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", part)
        name, index = match.group(1), match.group(2)
        node = node.get(name) if isinstance(node, dict) else None
        if index is not None:
            node = node[int(index)] if isinstance(node, list) and len(node) > int(index) else None
        if node is None:
            return None
    return node


def apply_mapping(dossier: dict, mapping: dict = MAPPING) -> dict:
    model: dict = {}
    for champ in dossier["champs"]:
        spec = mapping["champs"].get(champ["champDescriptorId"])
        if spec is None:
            continue  # e.g. section headers
        assert champ["__typename"] == spec["typename"], champ
        for field, path in spec["fields"].items():
            value = path_get(champ, path)
            if "row_champs" in spec:  # a repetition: one object per row
                value = [map_row(row, spec["row_champs"], mapping) for row in value or []]
            model[field] = value
    # Dossier-level paths (the demandeur) fill only what the champs left null.
    for field, path in mapping.get("dossier", {}).items():
        if model.get(field) is None:
            model[field] = path_get(dossier, path)
    return model


def map_row(row: dict, row_champs: dict, mapping: dict = MAPPING) -> dict:
    member = {}
    for child in row["champs"]:
        spec = row_champs[child["champDescriptorId"]]
        assert child["__typename"] == spec["typename"], child
        for field, path in spec["fields"].items():
            value = path_get(child, path)
            if "labels" in spec:  # a drop-down label, translated into our vocabulary
                value = mapping[spec["labels"]].get(value)
            member[field] = value
    return member


def b64_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def count_pdf_pages(data: bytes, tmp_path: Path) -> int:
    if shutil.which("qpdf"):
        path = tmp_path / "doc.pdf"
        path.write_bytes(data)
        return int(subprocess.run(["qpdf", "--show-npages", str(path)], check=True,
                                  capture_output=True, text=True).stdout)
    return len(re.findall(rb"/Type /Page\b(?!s)", data))


# --------------------------------------------------------------------------------------
# The documents and the mapping, checked without the server.
# --------------------------------------------------------------------------------------


def test_queries_validate_against_ds_schema():
    schema = build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))
    document = parse(QUERIES)
    assert validate(schema, document) == []
    operations = {d.name.value: d for d in document.definitions if isinstance(d, OperationDefinitionNode)}
    assert set(operations) == {"getDossier", "getDemarcheDossiers", "getDeletedDossiers"}
    variables = {name: {v.variable.name.value for v in op.variable_definitions}
                 for name, op in operations.items()}
    assert set(variables["getDossier"]) == {"number"}
    assert set(variables["getDemarcheDossiers"]) == {"demarcheNumber", "updatedSince", "first", "after"}
    assert set(variables["getDeletedDossiers"]) == {"demarcheNumber", "deletedSince", "first", "after"}


def demarche_fixture(number: int) -> dict:
    demarches = json.loads((FIXTURES / "demarche.json").read_text(encoding="utf-8"))
    return next(d for d in demarches if d["number"] == number)


@pytest.mark.parametrize("mapping, number", [(MAPPING, DEMARCHE), (LEGAL_MAPPING, LEGAL_DEMARCHE)],
                         ids=["ds_mapping.json", "ds_mapping_legal.json"])
def test_mapping_agrees_with_the_demarche_fixture(mapping, number):
    demarche = demarche_fixture(number)
    descriptors = {d["id"]: d for d in demarche["activeRevision"]["champDescriptors"]}
    for champ_id, spec in mapping["champs"].items():
        assert champ_id == make_fixtures.champ_descriptor_id(spec["stable_id"])
        descriptor = descriptors[champ_id]
        assert descriptor["label"] == spec["label"]
        children = {d["id"]: d for d in descriptor.get("champDescriptors") or []}
        for child_id, child_spec in spec.get("row_champs", {}).items():
            assert children[child_id]["label"] == child_spec["label"]
            if child_spec.get("labels"):
                # Every drop-down option maps to a kind, and every kind is reachable.
                assert set(children[child_id]["options"]) == set(mapping["member_kind_labels"])
                assert set(mapping["member_kind_labels"].values()) == set(mapping["member_kinds"])
    assert mapping["demarche_number"] == demarche["number"]
    # The dossier paths start at a field our getDossier fetches (DossierFields).
    for path in mapping.get("dossier", {}).values():
        assert path.split(".")[0] in {"demandeur", "number", "state", "dateDepot", "demarche"}, path


def test_fixture_generator_is_deterministic(tmp_path):
    written = make_fixtures.build(tmp_path)
    assert written
    for path in written:
        committed = FIXTURES / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run make_fixtures.py"


@pytest.mark.skipif(shutil.which("qpdf") is None, reason="qpdf is not installed")
@pytest.mark.parametrize("name, pages", [("ptce-4-pages.pdf", 4), ("ptce-11-pages.pdf", 11)])
def test_fixture_pdfs_are_valid(name, pages):
    path = FIXTURES / "files" / name
    check = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No syntax or stream encoding errors" in check.stdout
    npages = subprocess.run(["qpdf", "--show-npages", str(path)], capture_output=True, text=True, check=True)
    assert int(npages.stdout) == pages


def test_siret_fixtures_follow_luhn():
    assert make_fixtures.luhn_valid("73282932000074")
    assert not make_fixtures.luhn_valid("73282932000075")
    for _name, siret, *_rest in make_fixtures.MEMBERS_CATALOGUE.values():
        assert len(siret) == 14 and make_fixtures.luhn_valid(siret)


# --------------------------------------------------------------------------------------
# getDossier and the fixtures' eligibility cases.
# --------------------------------------------------------------------------------------


def test_get_dossier_1001_is_fully_eligible(fake, tmp_path):
    dossier = fake.dossier(1001)
    assert dossier["id"] == base64.b64encode(b"Dossier-1001").decode()
    assert dossier["number"] == 1001 and dossier["state"] == "en_construction"
    assert dossier["dateDepot"] == "2021-06-01T09:15:00+02:00"
    assert dossier["dateTraitement"] is None
    assert dossier["demarche"] == {"number": DEMARCHE}
    assert dossier["demandeur"]["__typename"] == "PersonneMorale"
    assert dossier["demandeur"]["siret"] == "73282932000074"

    model = apply_mapping(dossier)
    assert model["carrier_siret"] == "73282932000074"
    assert model["carrier_name"] == "Pôle Territorial de Coopération du Val"
    assert model["carrier_legal_form"] == "Association déclarée"
    assert model["carrier_legal_category"] == "9220"
    assert model["ptce_name"] == "PTCE Réemploi du Val"
    assert model["legal_person_private"] is True
    assert model["prior_state_support"] is False
    assert model["territory_name"] == "Val de la Coopération"
    assert model["region"] == "84"
    assert model["summary"]
    assert [m["kind"] for m in model["members"]] == ["ess_enterprise", "other_enterprise", "local_authority"]
    assert all(make_fixtures.luhn_valid(m["siret"]) for m in model["members"])

    document = model["main_document"]
    assert document["contentType"] == "application/pdf"
    download = requests.get(document["url"], timeout=10)
    assert download.status_code == 200
    assert int(document["byteSizeBigInt"]) == len(download.content)  # BigInt is a JSON string
    assert isinstance(document["byteSizeBigInt"], str)
    assert document["checksum"] == b64_md5(download.content)
    assert count_pdf_pages(download.content, tmp_path) == 4


def test_fixture_ineligible_cases(fake, tmp_path):
    assert len(apply_mapping(fake.dossier(1002))["members"]) == 2

    eleven = apply_mapping(fake.dossier(1003))["main_document"]
    assert eleven is not None and eleven["contentType"] == "application/pdf"
    assert count_pdf_pages(requests.get(eleven["url"], timeout=10).content, tmp_path) == 11

    dossier = fake.dossier(1004)
    model = apply_mapping(dossier)
    assert model["carrier_siret"] == "73282932000075"
    assert not make_fixtures.luhn_valid(model["carrier_siret"])
    assert model["carrier_name"] is None  # DS could not identify the establishment
    assert dossier["demandeur"] == {"__typename": "PersonneMoraleIncomplete", "siret": "73282932000075"}


@pytest.mark.parametrize("number, siret, name, category", [
    (5001, make_fixtures.LEGAL_CARRIERS["association"][0], "ASSOCIATION POLE COOPERATIF DU VAL", "9220"),
    (5002, make_fixtures.LEGAL_CARRIERS["sarl"][0], "REEMPLOI DU VAL SARL", "5499"),
    (5003, make_fixtures.LEGAL_CARRIERS["commune"][0], "COMMUNE DE VALENCE", "7210"),
])
def test_legal_demarche_carrier_is_the_demandeur(fake, number, siret, name, category):
    dossier = fake.dossier(number)
    assert dossier["demarche"] == {"number": LEGAL_DEMARCHE}
    assert dossier["demandeur"]["__typename"] == "PersonneMorale"
    # No champ gives the carrier: the only SIRETs in the form are the members' (inside rows).
    assert "SiretChamp" not in {c["__typename"] for c in dossier["champs"]}
    model = apply_mapping(dossier, LEGAL_MAPPING)
    assert (model["carrier_siret"], model["carrier_name"], model["carrier_legal_category"]) == \
        (siret, name, category)
    assert make_fixtures.luhn_valid(siret)
    assert model["carrier_legal_form"] == dossier["demandeur"]["entreprise"]["formeJuridique"]
    assert "legal_person_private" not in model  # no champ asks: the category answers
    assert model["ptce_name"] == "PTCE Réemploi du Val"
    assert [m["kind"] for m in model["members"]] == ["ess_enterprise", "other_enterprise", "local_authority"]
    assert model["main_document"]["contentType"] == "application/pdf"


def test_legal_demarche_incomplete_demandeur(fake):
    dossier = fake.dossier(5004)
    siret = make_fixtures.LEGAL_CARRIERS["incomplete"][0]
    assert dossier["demandeur"] == {"__typename": "PersonneMoraleIncomplete", "siret": siret}
    model = apply_mapping(dossier, LEGAL_MAPPING)
    assert model["carrier_siret"] == siret
    assert model["carrier_name"] is None and model["carrier_legal_category"] is None


def test_demarches_list_their_own_dossiers(fake):
    legal = fake.data("getDemarcheDossiers", {"demarcheNumber": LEGAL_DEMARCHE})["demarche"]["dossiers"]
    assert [n["number"] for n in legal["nodes"]] == [5001, 5002, 5003, 5004]
    ours = fake.data("getDemarcheDossiers", {"demarcheNumber": DEMARCHE})["demarche"]["dossiers"]
    assert [n["number"] for n in ours["nodes"]] == [1001, 1002, 1003, 1004]
    # A dossier deposited through the control API joins the démarche it names.
    extra = {**json.loads((FIXTURES / "dossiers" / "5001.json").read_text(encoding="utf-8")), "number": 5999}
    assert fake.control("POST", "dossiers", extra).status_code == 200
    assert fake.dossier(5999)["demarche"] == {"number": LEGAL_DEMARCHE}


def test_champ_types_fall_back_without_fragments(fake):
    # DS reports YesNoChamp, RegionChamp, DropDownListChamp... as themselves only when the
    # document has a fragment on them; our documents do, a naive query does not.
    naive = """query naive($number: Int!) { dossier(number: $number) { champs {
        __typename champDescriptorId ... on CheckboxChamp { checked: value } ... on TextChamp { value } } } }"""
    response = fake.graphql("naive", {"number": 1001}, query=naive)
    champs = {c["champDescriptorId"]: c for c in response.json()["data"]["dossier"]["champs"]}
    assert champs["Q2hhbXAtMTAy"] == {"__typename": "CheckboxChamp", "champDescriptorId": "Q2hhbXAtMTAy",
                                      "checked": True}
    assert champs["Q2hhbXAtMTA0"]["__typename"] == "TextChamp"
    assert champs["Q2hhbXAtMTA0"]["value"] == "Auvergne-Rhône-Alpes"


def test_unknown_dossier_is_not_found(fake):
    response = fake.graphql("getDossier", {"number": 999999})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "not_found"


def test_invalid_documents_and_variables(fake):
    assert fake.graphql(None, {}, query="query { dossier(number: 1001) ").status_code == 400
    unknown_field = fake.graphql(None, {}, query="query { dossier(number: 1001) { nope } }")
    assert unknown_field.status_code == 200 and unknown_field.json()["errors"]
    bad_date = fake.graphql("getDemarcheDossiers", {"demarcheNumber": DEMARCHE, "updatedSince": "yesterday"})
    assert bad_date.status_code == 200 and "updatedSince" in bad_date.json()["errors"][0]["message"]


def test_authentication(fake):
    missing = fake.graphql("getDossier", {"number": 1001}, token=None)
    assert missing.status_code == 403  # what DS answers without a valid token
    assert missing.json()["errors"][0]["extensions"]["code"] == "forbidden"
    assert fake.graphql("getDossier", {"number": 1001}, token="wrong").status_code == 403
    expired = fake.graphql("getDossier", {"number": 1001}, token=EXPIRED_TOKEN)
    assert expired.status_code == 401
    assert expired.json()["errors"][0]["message"] == "Token expired"


# --------------------------------------------------------------------------------------
# Pagination, updates and deletions.
# --------------------------------------------------------------------------------------


def bulk_dossiers(count: int, start: int = 2000) -> list[dict]:
    """Minimal dossiers: deposit order is the number order, update order is the reverse."""
    return [{
        "number": start + i,
        "dateDepot": f"2022-01-01T00:{i // 60:02d}:{i % 60:02d}+01:00",
        "dateDerniereModification": f"2022-02-01T00:{(count - 1 - i) // 60:02d}:{(count - 1 - i) % 60:02d}+01:00",
    } for i in range(count)]


def all_pages(fake: Fake, operation: str, connection: str, variables: dict) -> list[list[dict]]:
    pages, after = [], None
    for _ in range(20):  # bounded: the fixtures hold a few hundred dossiers at most
        data = fake.data(operation, {**variables, "after": after})["demarche"][connection]
        pages.append(data["nodes"])
        if not data["pageInfo"]["hasNextPage"]:
            return pages
        after = data["pageInfo"]["endCursor"]
    raise AssertionError("pagination did not end")


def test_pagination_by_deposit_date(fake):
    assert fake.control("POST", "dossiers", bulk_dossiers(250)).json()["upserted"][-1] == 2249
    pages = all_pages(fake, "getDemarcheDossiers", "dossiers", {"demarcheNumber": DEMARCHE, "first": 100})
    assert [len(p) for p in pages] == [100, 100, 54]  # 4 fixtures + 250
    numbers = [n["number"] for p in pages for n in p]
    assert numbers == [1001, 1002, 1003, 1004] + list(range(2000, 2250))  # by deposit date

    first_page = fake.data("getDemarcheDossiers", {"demarcheNumber": DEMARCHE, "first": 500})
    assert len(first_page["demarche"]["dossiers"]["nodes"]) == 100  # clamped like DS, not refused
    default = fake.data("getDemarcheDossiers", {"demarcheNumber": DEMARCHE})
    assert len(default["demarche"]["dossiers"]["nodes"]) == 100

    negative = fake.graphql("getDemarcheDossiers", {"demarcheNumber": DEMARCHE, "first": -1}).json()
    assert negative["errors"][0]["extensions"]["code"] == "bad_request"
    bad_cursor = fake.graphql("getDemarcheDossiers", {"demarcheNumber": DEMARCHE, "after": "!!"}).json()
    assert bad_cursor["errors"][0]["extensions"]["code"] == "bad_request"


def test_pagination_by_update_date_with_updated_since(fake):
    fake.control("POST", "dossiers", bulk_dossiers(150))
    pages = all_pages(fake, "getDemarcheDossiers", "dossiers",
                      {"demarcheNumber": DEMARCHE, "updatedSince": "2022-01-01T00:00:00+01:00", "first": 60})
    numbers = [n["number"] for p in pages for n in p]
    assert numbers == list(range(2149, 1999, -1))  # by last update: the reverse of deposit order
    dates = [n["dateDerniereModification"] for p in pages for n in p]
    assert dates == sorted(dates)

    # The filter is inclusive (>=), as DS's updated_since scope.
    since = fake.data("getDemarcheDossiers", {"demarcheNumber": DEMARCHE,
                                              "updatedSince": "2021-06-06T10:20:00+02:00", "first": 3})
    assert [n["number"] for n in since["demarche"]["dossiers"]["nodes"]] == [1004, 1002, 2149]


def test_upsert_bumps_update_order(fake):
    before = fake.dossier(1001)
    changed = {**json.loads((FIXTURES / "dossiers" / "1001.json").read_text(encoding="utf-8")),
               "state": "en_instruction", "dateDerniereModification": None}
    assert fake.control("POST", "dossiers", changed).status_code == 200
    after = fake.dossier(1001)
    assert after["state"] == "en_instruction"
    assert after["dateDerniereModification"] > before["dateDerniereModification"]
    recent = fake.data("getDemarcheDossiers", {"demarcheNumber": DEMARCHE, "updatedSince": "2025-01-01T00:00:00Z"})
    assert [n["number"] for n in recent["demarche"]["dossiers"]["nodes"]] == [1001]


def test_upsert_rejects_bad_fixtures(fake):
    bad_type = {"number": 3000, "champs": [{"__typename": "NoSuchChamp", "champDescriptorId": "x"}]}
    assert fake.control("POST", "dossiers", bad_type).status_code == 400
    assert fake.control("POST", "dossiers", {"number": 3001, "state": "brouillon"}).status_code == 400
    assert fake.control("POST", "faults", {"mode": "teapot"}).status_code == 400


def test_deleted_dossiers(fake):
    deleted = fake.control("DELETE", "dossiers/1002", {"reason": "user_request"})
    assert deleted.status_code == 200
    assert fake.control("DELETE", "dossiers/1002").status_code == 404

    missing = fake.graphql("getDossier", {"number": 1002}).json()
    assert missing["errors"][0]["extensions"]["code"] == "not_found"
    data = fake.data("getDeletedDossiers", {"demarcheNumber": DEMARCHE})["demarche"]["deletedDossiers"]
    assert [(n["number"], n["state"], n["reason"]) for n in data["nodes"]] == [(1002, "en_construction", "user_request")]
    assert data["nodes"][0]["dateSupression"]
    later = fake.data("getDeletedDossiers", {"demarcheNumber": DEMARCHE, "deletedSince": "2999-01-01T00:00:00Z"})
    assert later["demarche"]["deletedDossiers"]["nodes"] == []
    remaining = fake.data("getDemarcheDossiers", {"demarcheNumber": DEMARCHE})["demarche"]["dossiers"]["nodes"]
    assert 1002 not in [n["number"] for n in remaining]


# --------------------------------------------------------------------------------------
# Faults, rate limiting, files and statistics.
# --------------------------------------------------------------------------------------


def test_429_fault_carries_ratelimit_reset(fake):
    fake.control("POST", "faults", {"mode": "429", "count": 2, "reset_in": 2})
    for _ in range(2):
        started = int(time.time())
        response = fake.graphql("getDossier", {"number": 1001})
        assert response.status_code == 429
        assert response.headers["RateLimit-Remaining"] == "0"
        assert started + 1 <= int(response.headers["RateLimit-Reset"]) <= int(time.time()) + 2
        assert "Retry-After" not in response.headers
    assert fake.graphql("getDossier", {"number": 1001}).status_code == 200
    stats = fake.control("GET", "stats").json()
    assert stats["rate_limited"] == 2
    assert stats["graphql_requests"]["getDossier"] == 3


def test_internal_rate_limiter(fake):
    # Keep the three requests inside one rack-attack window (a calendar minute).
    if time.time() % 60 > 55:
        time.sleep(61 - time.time() % 60)
    fake.control("POST", "config", {"rate_limit": 2})
    statuses = [fake.graphql("getDossier", {"number": 1001}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    throttled = fake.graphql("getDossier", {"number": 1001})
    reset = int(throttled.headers["RateLimit-Reset"])
    assert reset % 60 == 0 and 0 < reset - time.time() <= 60
    # Another token has its own budget.
    assert fake.graphql("getDossier", {"number": 1001}, token="other").status_code == 403


def test_500_slow_and_down_faults(fake):
    fake.control("POST", "faults", [{"mode": "500", "count": 1}, {"mode": "slow", "delay_ms": 400, "count": 1}])
    failed = fake.graphql("getDossier", {"number": 1001})
    assert failed.status_code == 500
    assert failed.json()["errors"][0]["extensions"]["code"] == "internal_server_error"
    started = time.monotonic()
    assert fake.graphql("getDossier", {"number": 1001}).status_code == 200
    assert time.monotonic() - started >= 0.4

    fake.control("POST", "faults", {"mode": "down", "count": 1})
    with pytest.raises(requests.exceptions.ConnectionError):
        fake.graphql("getDossier", {"number": 1001})
    assert fake.graphql("getDossier", {"number": 1001}).status_code == 200
    assert fake.control("GET", "stats").json()["faults_served"] == {"500": 1, "slow": 1, "down": 1}


def test_file_download_and_checksum(fake):
    document = apply_mapping(fake.dossier(1001))["main_document"]
    assert re.search(r"/files/[^/]+/[^?]+\?expires=\d+&sig=", document["url"])
    expires = int(re.search(r"expires=(\d+)", document["url"]).group(1))
    assert 3500 < expires - time.time() <= 3600  # one hour, as DS
    body = requests.get(document["url"], timeout=10).content
    assert body.startswith(b"%PDF-1.4") and document["checksum"] == b64_md5(body)
    tampered = document["url"].replace(f"expires={expires}", f"expires={expires + 1}")
    assert requests.get(tampered, timeout=10).status_code == 403
    assert fake.control("GET", "stats").json()["file_downloads"] == 1


def test_expired_url_answers_403(fake):
    fake.control("POST", "faults", {"mode": "expire_urls"})
    document = apply_mapping(fake.dossier(1001))["main_document"]
    response = requests.get(document["url"], timeout=10)
    assert response.status_code == 403
    assert b"Request has expired" in response.content
    stats = fake.control("GET", "stats").json()
    assert stats["file_downloads"] == 0 and stats["file_downloads_denied"] == 1


def test_bad_checksum_fault(fake):
    fake.control("POST", "faults", {"mode": "bad_checksum", "count": 1})
    document = apply_mapping(fake.dossier(1001))["main_document"]
    corrupt = requests.get(document["url"], timeout=10).content
    assert len(corrupt) == int(document["byteSizeBigInt"])
    assert b64_md5(corrupt) != document["checksum"]
    assert b64_md5(requests.get(document["url"], timeout=10).content) == document["checksum"]


def test_fault_narrowed_to_one_dossier(fake):
    fake.control("POST", "faults", {"mode": "500", "count": 1, "dossier": 1002})
    assert fake.graphql("getDossier", {"number": 1001}).status_code == 200  # passed by
    assert fake.control("GET", "faults").json()["faults"][0]["count"] == 1
    assert fake.graphql("getDossier", {"number": 1002}).status_code == 500
    assert fake.control("GET", "faults").json()["faults"] == []
    # A narrowed file fault hits only the downloads of that dossier's files.
    fake.control("POST", "faults", {"mode": "500", "target": "files", "count": 1, "dossier": 1002})
    url_1001 = apply_mapping(fake.dossier(1001))["main_document"]["url"]
    assert requests.get(url_1001, timeout=10).status_code == 200
    url_1002 = apply_mapping(fake.dossier(1002))["main_document"]["url"]
    assert requests.get(url_1002, timeout=10).status_code == 500
    assert fake.control("POST", "faults", {"mode": "500", "dossier": "1002"}).status_code == 400


def test_large_and_lying_files(fake):
    dossier = json.loads((FIXTURES / "dossiers" / "1001.json").read_text(encoding="utf-8"))
    dossier["number"] = 3100
    champ = next(c for c in dossier["champs"] if c["champDescriptorId"] == "Q2hhbXAtMTEw")
    champ["files"] = [{"filename": "big.pdf", "contentType": "application/pdf", "content": "%PDF-1.4 ",
                       "size": 100_000, "declaredByteSize": 1234}]
    assert fake.control("POST", "dossiers", dossier).status_code == 200
    document = apply_mapping(fake.dossier(3100))["main_document"]
    assert document["byteSizeBigInt"] == "1234"  # announced, not what is served
    body = requests.get(document["url"], timeout=10).content
    assert len(body) == 100_000 and body.startswith(b"%PDF-1.4 %PDF")
    assert document["checksum"] == b64_md5(body)
    champ["files"][0]["size"] = 0
    assert fake.control("POST", "dossiers", dossier).status_code == 400


# --------------------------------------------------------------------------------------
# Mutations: instruction's write-back documents, DS's preconditions and refusals.
# --------------------------------------------------------------------------------------


def gid(number: int) -> str:
    return base64.b64encode(f"Dossier-{number}".encode()).decode()


def mutate(fake: Fake, mutation: str, number: int, instructeur: str = INSTRUCTEUR, **extra) -> dict:
    variables = {"input": {"dossierId": gid(number), "instructeurId": instructeur, **extra}}
    response = fake.graphql(mutation, variables, query=MUTATIONS)
    assert response.status_code == 200, response.text
    return response.json()


def put_dossier(fake: Fake, number: int, state: str) -> None:
    body = {"number": number, "state": state, "demarche": {"number": LEGAL_DEMARCHE}}
    assert fake.control("POST", "dossiers", body).status_code == 200


def test_mutations_validate_against_ds_schema():
    schema = build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))
    document = parse(MUTATIONS)
    assert validate(schema, document) == []
    operations = {d.name.value for d in document.definitions if isinstance(d, OperationDefinitionNode)}
    assert operations == {"dossierPasserEnInstruction", "dossierAccepter", "dossierRefuser",
                          "dossierClasserSansSuite", "dossierRepasserEnConstruction", "writebackDossierState"}


def test_mutations_follow_the_lifecycle(fake):
    put_dossier(fake, 9101, "en_construction")
    before = fake.control("GET", "dossiers/9101").json()["dateDerniereModification"]
    time.sleep(1.1)  # DS's dates have whole seconds
    body = mutate(fake, "dossierPasserEnInstruction", 9101, clientMutationId="c1")
    payload = body["data"]["dossierPasserEnInstruction"]
    assert payload["errors"] is None and payload["dossier"]["state"] == "en_instruction"
    stored = fake.control("GET", "dossiers/9101").json()
    assert stored["state"] == "en_instruction" and stored["dateDerniereModification"] > before
    assert mutate(fake, "dossierRepasserEnConstruction", 9101)["data"]["dossierRepasserEnConstruction"][
        "dossier"]["state"] == "en_construction"
    mutate(fake, "dossierPasserEnInstruction", 9101)
    accepted = mutate(fake, "dossierAccepter", 9101, motivation="Projet solide")
    assert accepted["data"]["dossierAccepter"]["dossier"]["state"] == "accepte"
    assert fake.control("GET", "dossiers/9101").json()["motivation"] == "Projet solide"
    log = fake.control("GET", "mutations?dossier=9101").json()["mutations"]
    assert [e["mutation"] for e in log] == ["dossierPasserEnInstruction", "dossierRepasserEnConstruction",
                                            "dossierPasserEnInstruction", "dossierAccepter"]
    assert all(e["ok"] for e in log)
    assert log[0]["input"]["clientMutationId"] == "c1" and log[3]["input"]["motivation"] == "Projet solide"


@pytest.mark.parametrize("mutation,start,target", [
    ("dossierRefuser", "en_instruction", "refuse"),
    ("dossierClasserSansSuite", "en_instruction", "sans_suite"),
])
def test_refuse_and_close_need_a_motivation(fake, mutation, start, target):
    put_dossier(fake, 9102, start)
    missing = mutate(fake, mutation, 9102)  # motivation: String! in the input type
    assert missing["errors"] and fake.control("GET", "dossiers/9102").json()["state"] == start
    done = mutate(fake, mutation, 9102, motivation="Hors champ")
    assert done["data"][mutation]["dossier"]["state"] == target


def test_preconditions_are_refusals_inside_a_200(fake):
    put_dossier(fake, 9103, "accepte")
    body = mutate(fake, "dossierAccepter", 9103)
    assert body["data"]["dossierAccepter"] == {"dossier": None, "errors": [{"message": "Le dossier est déjà accepté"}]}
    assert "errors" not in body
    put_dossier(fake, 9104, "en_construction")
    refused = mutate(fake, "dossierRefuser", 9104, motivation="x")["data"]["dossierRefuser"]
    assert refused["errors"] == [{"message": "Le dossier est déjà en construction"}]
    assert mutate(fake, "dossierRepasserEnConstruction", 9104)["data"]["dossierRepasserEnConstruction"]["errors"]
    put_dossier(fake, 9105, "en_instruction")
    assert mutate(fake, "dossierPasserEnInstruction", 9105)["data"]["dossierPasserEnInstruction"]["errors"] == [
        {"message": "Le dossier est déjà en instruction"}]
    log = fake.control("GET", "mutations").json()["mutations"]
    assert [e["ok"] for e in log] == [False, False, False, False]
    assert fake.control("GET", "dossiers/9103").json()["state"] == "accepte"


def test_wrong_instructeur_is_a_permission_error(fake):
    put_dossier(fake, 9106, "en_construction")
    other = base64.b64encode(b"Instructeur-99").decode()
    payload = mutate(fake, "dossierPasserEnInstruction", 9106, instructeur=other)["data"]["dossierPasserEnInstruction"]
    assert payload["dossier"] is None
    assert payload["errors"] == [{"message": "L’instructeur n’a pas les droits d’accès à ce dossier"}]
    assert fake.control("GET", "dossiers/9106").json()["state"] == "en_construction"
    # The control API changes who may act; the dossier's groupe instructeur's ones always may.
    fake.control("POST", "config", {"instructeurs": [other]})
    assert mutate(fake, "dossierPasserEnInstruction", 9106, instructeur=other)["data"][
        "dossierPasserEnInstruction"]["errors"] is None


def test_mutation_input_is_checked_against_the_schema(fake):
    put_dossier(fake, 9107, "en_construction")
    response = fake.graphql("dossierPasserEnInstruction", {"input": {
        "dossierId": gid(9107), "instructeurId": INSTRUCTEUR, "motivation": "no such field"}}, query=MUTATIONS)
    assert response.status_code == 200 and response.json()["errors"]
    assert fake.control("GET", "dossiers/9107").json()["state"] == "en_construction"
    unknown = mutate(fake, "dossierPasserEnInstruction", 999999)
    assert unknown["errors"][0]["extensions"]["code"] == "not_found"


def test_faults_apply_to_mutations_and_narrow_to_their_dossier(fake):
    put_dossier(fake, 9108, "en_construction")
    put_dossier(fake, 9109, "en_construction")
    fake.control("POST", "faults", [{"mode": "429", "count": 1, "reset_in": 2, "dossier": 9108},
                                    {"mode": "down", "count": 1, "dossier": 9108}])
    variables = {"input": {"dossierId": gid(9109), "instructeurId": INSTRUCTEUR}}
    assert fake.graphql("dossierPasserEnInstruction", variables, query=MUTATIONS).status_code == 200
    variables["input"]["dossierId"] = gid(9108)
    throttled = fake.graphql("dossierPasserEnInstruction", variables, query=MUTATIONS)
    assert throttled.status_code == 429 and "RateLimit-Reset" in throttled.headers
    with pytest.raises(requests.exceptions.ConnectionError):
        fake.graphql("dossierPasserEnInstruction", variables, query=MUTATIONS)
    assert fake.control("GET", "dossiers/9108").json()["state"] == "en_construction"
    assert fake.graphql("dossierPasserEnInstruction", variables, query=MUTATIONS).status_code == 200
    assert fake.control("GET", "dossiers/9108").json()["state"] == "en_instruction"
