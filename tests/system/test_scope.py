"""Every key's scope is explicit, and nobody reads what is not theirs.

ptce-admin refuses a key without --regions and "--regions all" for a role that may not have it;
the database's CHECK refuses the same rows; a row without a usable scope (written by hand,
or left by an install older than the CHECK) is refused by the services; a partner deposits only
for its regions and reads back only what it deposited there.
"""
import os
import subprocess
import uuid

import psycopg
import pytest
import requests

from conftest import _env, bearer, partner_body, sql

BODY = partner_body()


def admin(admin_url, *args):
    return subprocess.run([os.path.join(_env("PTCE_BUILD"), "ptce-admin"), *args],
                          env={**os.environ, "PTCE_ADMIN_DATABASE_URL": admin_url},
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args", [
    ["--role", "national_admin"],                                 # no --regions at all
    ["--role", "regional_instructor", "--regions", "all"],
    ["--role", "partner", "--regions", "all"],
    ["--role", "expert", "--regions", "all"],
    ["--role", "regional_instructor", "--regions", "05"],         # there is no region 05
    ["--role", "partner", "--regions", ""],
])
def test_admin_refuses_implicit_or_wrong_scope(admin_url, db, args):
    before = sql(db, "SELECT count(*) FROM iam.api_key")[0][0]
    out = admin(admin_url, "key", "create", "--label", "scope-test", *args)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "--regions" in out.stderr
    assert sql(db, "SELECT count(*) FROM iam.api_key")[0][0] == before


@pytest.mark.parametrize("role", ["national_admin", "funding_officer", "dashboard"])
def test_admin_all_regions_for_national_roles(admin_url, db, role):
    out = admin(admin_url, "key", "create", "--role", role, "--regions", "all", "--label", "scope-test")
    assert out.returncode == 0, out.stderr
    kid = out.stdout.strip().split("_")[1]
    assert sql(db, "SELECT all_regions, regions FROM iam.api_key WHERE key_id = %s", kid) == [(True, None)]


def test_database_refuses_a_key_without_scope(db):
    with pytest.raises(psycopg.errors.CheckViolation):
        sql(db, "INSERT INTO iam.api_key (key_id, secret_hash, role, regions, all_regions)"
                " VALUES (%s, repeat('a', 64), 'national_admin', NULL, false)", uuid.uuid4().hex[:16])


def test_a_row_without_scope_is_refused(urls, keys, db):
    """A row left by an older install (before the CHECK) grants nothing: 401, not every region."""
    token = keys.create("national_admin")
    kid = token.split("_")[1]
    assert requests.get(urls["submission"] + "/v1/dossiers", headers=bearer(token), timeout=10).status_code == 200
    # Make the row as an older install left it: the constraint is put back NOT VALID, as
    # ptce-admin bootstrap installs it, so that this row stays and is still refused.
    with db.transaction():
        sql(db, "ALTER TABLE iam.api_key DROP CONSTRAINT api_key_scope_explicit")
        sql(db, "UPDATE iam.api_key SET all_regions = false, regions = NULL WHERE key_id = %s", kid)
        sql(db, "ALTER TABLE iam.api_key ADD CONSTRAINT api_key_scope_explicit CHECK ("
                " (all_regions AND regions IS NULL"
                "  AND role IN ('national_admin', 'funding_officer', 'dashboard'))"
                " OR (NOT all_regions AND regions IS NOT NULL AND cardinality(regions) > 0"
                "  AND regions <@ ARRAY['01','02','03','04','06','11','24','27','28','32','44',"
                "                       '52','53','75','76','84','93','94'])) NOT VALID")
    try:
        # the auth cache of the tests lives 100 ms (PTCE_AUTH_CACHE_TTL_MS in tests/run.sh)
        import time
        deadline = time.monotonic() + 5
        code = None
        while time.monotonic() < deadline:
            code = requests.get(urls["submission"] + "/v1/dossiers", headers=bearer(token), timeout=10).status_code
            if code == 401:
                break
            time.sleep(0.1)
        assert code == 401
    finally:
        sql(db, "DELETE FROM iam.api_key WHERE key_id = %s", kid)


def test_partner_deposits_and_reads_only_in_its_regions(urls, keys):
    base = urls["submission"] + "/v1/dossiers"
    partner = keys.create("partner", "84")
    r = requests.post(base, json=BODY, timeout=10,
                      headers={**bearer(partner), "Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    dossier_id = r.json()["id"]
    assert requests.get(f"{base}/{dossier_id}", headers=bearer(partner), timeout=10).status_code == 200

    outside = dict(BODY, territory={"name": "Pays de Z", "region": "11"})
    r = requests.post(base, json=outside, timeout=10,
                      headers={**bearer(partner), "Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 403, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")

    # Another region's instructor, and another partner of the same region, see nothing of it.
    for token in (keys.create("regional_instructor", "11"), keys.create("partner", "84")):
        assert requests.get(f"{base}/{dossier_id}", headers=bearer(token), timeout=10).status_code == 404
    assert requests.get(f"{base}/{dossier_id}", headers=bearer(keys.create("regional_instructor", "84")),
                        timeout=10).status_code == 200
