"""Every running service keeps the contract of its own api-spec/openapi.yaml under fuzzing.

schemathesis (pinned in tests/requirements.txt) runs, as its CLI, against each service every
operation of the spec whose servers are that service's (an operation without servers of its own
is served by all three), with a valid national_admin key, every check on (`--checks all`), a
fixed seed and a bounded number of examples, talking only to the service's 127.0.0.1 URL. Any
failure of any check fails the test. What JSON Schema cannot say is in fuzz_hooks.py (a fresh
Idempotency-Key per request, the order of a wave's deposit window) and schemathesis.toml (428
for a missing Idempotency-Key).

This test writes dossiers and waves (a wave can capture later deposits), so conftest.py runs it
after every other test of the session.
"""
import os
import re
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from conftest import ROOT, bearer

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.join(ROOT, "api-spec", "openapi.yaml")
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")
# The spec's default port of each service (its `servers`).
SERVICE_PORTS = {"submission": 8081, "instruction": 8082, "funding": 8083}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SEED = int(os.environ.get("PTCE_FUZZ_SEED", "20261201"))  # CI keeps the default

# Every service runs the stateful phase (chains of linked calls): the request bodies are closed.
STATEFUL_GAP: set[str] = set()
MAX_EXAMPLES = int(os.environ.get("PTCE_FUZZ_MAX_EXAMPLES", "100"))


def load_spec():
    with open(SPEC_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def service_groups(spec, service):
    """{base path: operationIds} of the spec's operations whose servers (operation's, else
    path's, else global) include the service's port; the base path is that server's path."""
    port = SERVICE_PORTS[service]
    groups = {}
    for path, item in spec["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            servers = op.get("servers") or item.get("servers") or spec["servers"]
            for server in servers:
                url = urlsplit(server["url"].replace("{host}", "h"))
                if url.port == port:
                    assert op.get("operationId"), f"{method.upper()} {path} has no operationId"
                    groups.setdefault(url.path.rstrip("/"), []).append(op["operationId"])
                    break
    return groups


def service_operations(spec, service):
    return [op for ops in service_groups(spec, service).values() for op in ops]


def test_every_operation_of_the_spec_is_fuzzed():
    """No operation is left out of the fuzzing: each one is served by one of the services, whose
    run includes every operation it serves (none is excluded by name any more; the funding
    operations under If-Match and the report's submission were, until spec and code agreed)."""
    spec = load_spec()
    every = {item[m]["operationId"] for item in spec["paths"].values() for m in METHODS if m in item}
    fuzzed = {op for service in SERVICE_PORTS for op in service_operations(spec, service)}
    assert every == fuzzed, sorted(every - fuzzed)
    assert {"signFundingAgreement", "reduceFundingAgreement", "decideFundingYear3",
            "submitFundingReport"} <= set(service_operations(spec, "funding"))


def test_every_service_has_operations():
    spec = load_spec()
    for service in SERVICE_PORTS:
        assert {"getHealthz", "getReadyz", "getMetrics"} <= set(service_operations(spec, service))
    assert "createDossier" in service_operations(spec, "submission")
    assert "createDossier" not in service_operations(spec, "funding")


@pytest.mark.parametrize("service", list(SERVICE_PORTS))
def test_contract_fuzz(service, urls, keys, tmp_path):
    url = urls[service]
    assert urlsplit(url).hostname == "127.0.0.1", url
    groups = service_groups(load_spec(), service)
    token = keys.create("national_admin")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": os.path.join(HERE, "fuzz_hooks.py"), "PTCE_FUZZ_TOKEN": token,
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    total, failures = 0, []
    for base, ops in groups.items():  # one run per server base path (instruction has two)
        cmd = [SCHEMATHESIS, "--config-file", os.path.join(HERE, "schemathesis.toml"), "run", SPEC_PATH,
               "--url", url + base, "--checks", "all",
               "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
               "--generation-database", "none", "--request-timeout", "10", "--no-color"]
        if service in STATEFUL_GAP:
            cmd += ["--phases", "examples,coverage,fuzzing"]
        for op in ops:
            cmd += ["--include-operation-id", op]
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        out = run.stdout + run.stderr
        cases = re.search(r"(\d+) generated", out)
        assert cases and int(cases.group(1)) > 0, out[-5000:]
        total += int(cases.group(1))
        if run.returncode != 0:
            failures.append(out[out.find("FAILURES"):] if "FAILURES" in out else out)
    print(f"{service}: {sum(map(len, groups.values()))} operations, {total} cases")
    assert not failures, f"schemathesis found failures on {service}:\n" + "\n".join(failures)[:200000]


def test_wave_fields_as_the_spec_reads_them(urls, keys):
    """What the fuzzing found on POST /v1/waves, pinned: lengths in characters, 15.0 an integer,
    times stored as the instants checked, a window that closes before it opens named in
    `errors` (it was a database constraint answered without them), unknown fields refused.
    Past, closed waves only."""
    token, base = keys.create("national_admin"), urls["submission"] + "/v1/waves"
    wave_id = f"f{int(time.time() * 1000) % 10**12}"
    wave = {"id": wave_id, "label": "é" * 200, "deposit_opens_at": "2019-01-01 00:00:00 +0100",
            "deposit_closes_at": "2019-02-01T00:00:00.5Z", "phase2_slots": 15.0,
            "amount_per_laureate_cents": 10000000.0}
    r = requests.post(base, json=wave, headers=bearer(token), timeout=10)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["phase2_slots"] == 15 and created["amount_per_laureate_cents"] == 10_000_000
    assert created["label"] == "é" * 200
    assert created["deposit_opens_at"].startswith("2018-12-31T23:00:00"), created
    same = dict(wave, id=wave_id + "b", deposit_closes_at="2019-01-01T00:00:00+01:00")
    r = requests.post(base, json=same, headers=bearer(token), timeout=10)
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json().get("errors", [])] == ["deposit_closes_at"], r.text
    r = requests.post(base, json=dict(wave, id=wave_id + "c", label="é" * 201), headers=bearer(token),
                      timeout=10)
    assert r.status_code == 400 and [e["field"] for e in r.json()["errors"]] == ["label"], r.text
    # WaveInput has additionalProperties: false: an unknown field is named, not ignored
    r = requests.post(base, json=dict(wave, id=wave_id + "d", rules_version="v0"), headers=bearer(token),
                      timeout=10)
    assert r.status_code == 400 and [e["field"] for e in r.json()["errors"]] == ["rules_version"], r.text
