"""Every route of every service, called with a key of every role, answers as route_matrix says.

Three views must agree: the services' own route tables (`ptce-<service> --routes`), the table
of tests/system/route_matrix.py, and the `x-roles` of api-spec/openapi.yaml. Then each route is
called with a key of each of the six roles, with benign requests (a random UUID for every path
parameter, `{}` or no body): an allowed role never gets 401, 403 or a 404 from its role (a 404
is accepted only on a route with a path parameter, for the random id), a hidden role gets 404
(on the list routes too, where no id can be absent), any other role 403, and a public route
answers without a key.
"""
import os
import re
import subprocess
import uuid

import pytest
import requests
import yaml

from conftest import ROOT, bearer, _env
from route_matrix import PROBES, PUBLIC, ROLES, ROUTES

SERVICES = tuple(ROUTES)
SPEC = yaml.safe_load(open(os.path.join(ROOT, "api-spec", "openapi.yaml"), encoding="utf-8"))


def table(service):
    """route_matrix's rows of a service, probes included, as {(method, pattern): (allowed, hidden)}."""
    rows = {}
    for method, pattern, allowed, hidden in ROUTES[service] + PROBES:
        assert (method, pattern) not in rows, f"{service}: {method} {pattern} twice in route_matrix"
        rows[(method, pattern)] = (allowed, frozenset(hidden))
    return rows


def served(service):
    """The service's own table, from `ptce-<service> --routes`."""
    out = subprocess.run([os.path.join(_env("PTCE_BUILD"), f"ptce-{service}"), "--routes"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        method, pattern, allowed, hidden = line.split(" ")
        rows[(method, pattern)] = (PUBLIC if allowed == "public" else frozenset(allowed.split(",")),
                                   frozenset() if hidden == "-" else frozenset(hidden.split(",")))
    return rows


@pytest.mark.parametrize("service", SERVICES)
def test_route_table_is_the_matrix(service):
    got, want = served(service), table(service)
    assert sorted(set(got) - set(want)) == [], f"{service} serves routes route_matrix lacks"
    assert sorted(set(want) - set(got)) == [], f"route_matrix has routes {service} lacks"
    for route, roles in want.items():
        assert got[route] == roles, f"{service} {route}: served {got[route]}, matrix {roles}"


SERVICE_PORTS = {"submission": 8081, "instruction": 8082, "funding": 8083}


def spec_operations():
    """{(service, METHOD, path as served): x-roles} of every operation of the spec. A path's
    service is its servers' port (none: the probes, served by all three); a path-level server's
    base path (instruction's `/v1`) is part of the path as served."""
    ops = {}
    for path, item in SPEC["paths"].items():
        servers = item.get("servers") or []
        base = re.sub(r"^[a-z]+://[^/]+", "", servers[0]["url"]).rstrip("/") if servers else ""
        port = re.search(r":(\d+)", servers[0]["url"]) if servers else None
        owners = [s for s, p in SERVICE_PORTS.items() if port and int(port.group(1)) == p] \
            if servers else list(SERVICES)
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                for service in owners:
                    ops[(service, method.upper(), base + path)] = op.get("x-roles")
    return ops


def test_spec_x_roles_are_the_matrix():
    ops = spec_operations()
    everywhere = {(service, *route): roles for service in SERVICES
                  for route, roles in table(service).items()}
    assert sorted(set(ops) - set(everywhere)) == [], "operations of the spec no service serves"
    for route, (allowed, _) in everywhere.items():
        assert route in ops, f"{route} is served but not in api-spec/openapi.yaml"
        x_roles = ops[route]
        assert x_roles is not None, f"{route}: no x-roles in the spec"
        want = [] if allowed == PUBLIC else sorted(allowed)
        assert sorted(x_roles) == want, f"{route}: x-roles {x_roles}, matrix {want}"


@pytest.fixture(scope="module")
def role_keys(keys):
    return {role: keys.create(role) for role in ROLES}


def call(url, method, pattern, token=None):
    path = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), pattern)
    headers = bearer(token) if token else {}
    data = None
    if method in ("POST", "PUT", "PATCH") and "/webhooks/" not in pattern:
        headers.update({"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
        data = b"{}"
    return requests.request(method, url + path, headers=headers, data=data, timeout=30)


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_with_every_role(service, urls, role_keys):
    url = urls[service]
    failures = []
    for (method, pattern), (allowed, hidden) in sorted(table(service).items()):
        where = f"{service} {method} {pattern}"
        if allowed == PUBLIC:
            r = call(url, method, pattern)
            if r.status_code in (401, 403):
                failures.append(f"{where} without a key: {r.status_code}")
            continue
        r = call(url, method, pattern)
        if r.status_code != 401:
            failures.append(f"{where} without a key: {r.status_code}, not 401")
        has_param = "{" in pattern
        for role in ROLES:
            r = call(url, method, pattern, role_keys[role])
            code = r.status_code
            if role in hidden:
                ok = code == 404
                want = "404 (hidden)"
            elif role in allowed:
                ok = code not in (401, 403) and (code != 404 or has_param)
                want = "not 401/403" + ("" if has_param else "/404")
            else:
                ok = code == 403
                want = "403"
            if not ok:
                failures.append(f"{where} as {role}: {code}, want {want}: {r.text[:200]}")
    assert failures == []
