"""Submission's reads of a dossier carry its version as an ETag; its list reads `limit` as
every list of the platform does.

The ETag is the strong tag `"v<version>"` of common/precond, read from the same row as the
document; `If-None-Match` is compared weakly (RFC 9110 §13.1.2): `*`, a list, `W/` tags.
"""
import datetime as dt
import uuid

import requests

from conftest import bearer, partner_body
from test_submission_ds import changed, deposit, make_dossier, now_paris, wait_dossier, webhook

MISSING = "00000000-0000-4000-8000-000000000000"


def get(urls, path, token, **headers):
    return requests.get(f"{urls['submission']}{path}", headers={**bearer(token), **headers},
                        timeout=10)


def ds_dossier(urls, db, dsfake):
    """A DS dossier stored at version 1, and a function that makes its version 2."""
    # Modified a while ago, so that the update (at now) is later by DS's whole seconds.
    t0 = now_paris() - dt.timedelta(seconds=30)
    d = make_dossier(1001, region="84", updated=t0)
    number = deposit(dsfake, d)
    webhook(urls, number, "en_construction", t0)
    row = wait_dossier(db, number, lambda r: r["version"] == 1)

    def update():
        deposit(dsfake, changed(d, summary="Un résumé revu par le porteur."))
        webhook(urls, number, "en_construction", now_paris())
        return wait_dossier(db, number, lambda r: r["version"] == 2)
    return row["id"], update


def assert_not_modified(r, etag):
    assert r.status_code == 304, (r.status_code, r.text)
    assert r.content == b""
    assert r.headers.get("ETag") == etag


def test_dossier_etag_is_its_version_and_answers_304(urls, db, dsfake, keys):
    token = keys.create("national_admin")
    dossier_id, update = ds_dossier(urls, db, dsfake)
    path = f"/v1/dossiers/{dossier_id}"

    r = get(urls, path, token)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert r.headers["ETag"] == '"v1"'

    for header in ('"v1"', 'W/"v1"', "*", '"v0" , W/"v1"', '"v7", "v1"', ', "v1",'):
        assert_not_modified(get(urls, path, token, **{"If-None-Match": header}), '"v1"')
    for header in ('"v2"', 'W/"v0"', '"1"', '"v1x"', '"V1"'):
        r = get(urls, path, token, **{"If-None-Match": header})
        assert r.status_code == 200, (header, r.status_code, r.text)
        assert r.json()["id"] == dossier_id and r.headers["ETag"] == '"v1"'

    # A new version changes the tag: the old one no longer matches.
    update()
    r = get(urls, path, token, **{"If-None-Match": '"v1"'})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert r.headers["ETag"] == '"v2"'
    assert_not_modified(get(urls, path, token, **{"If-None-Match": r.headers["ETag"]}), '"v2"')


def test_if_none_match_edges(urls, db, dsfake, keys):
    token = keys.create("national_admin")
    dossier_id, _ = ds_dossier(urls, db, dsfake)

    # Not a list of entity tags: 400, the same problem as instruction's.
    for header in ("v1", '"v1', '"v1" x', ","):
        r = get(urls, f"/v1/dossiers/{dossier_id}", token, **{"If-None-Match": header})
        assert r.status_code == 400, (header, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.json()["type"] == "urn:ptce:problem:invalid"
        assert "ETag" not in r.headers
    # An empty value is an empty list (RFC 9110 §5.6.1): nothing matches, the dossier is sent.
    r = get(urls, f"/v1/dossiers/{dossier_id}", token, **{"If-None-Match": ""})
    assert r.status_code == 200 and r.headers["ETag"] == '"v1"', r.text
    # `*` matches only a dossier that exists (and that the key may see).
    r = get(urls, f"/v1/dossiers/{MISSING}", token, **{"If-None-Match": "*"})
    assert r.status_code == 404, r.text
    outsider = keys.create("regional_instructor", regions="11")
    r = get(urls, f"/v1/dossiers/{dossier_id}", outsider, **{"If-None-Match": "*"})
    assert r.status_code == 404, r.text
    # HEAD is served by the GET route, with the same tag.
    r = requests.head(f"{urls['submission']}/v1/dossiers/{dossier_id}", headers=bearer(token),
                      timeout=10)
    assert r.status_code == 200 and r.headers["ETag"] == '"v1"'


def test_history_etag_follows_the_dossier_version(urls, db, dsfake, keys):
    token = keys.create("national_admin")
    dossier_id, update = ds_dossier(urls, db, dsfake)
    path = f"/v1/dossiers/{dossier_id}/history"

    r = get(urls, path, token)
    assert r.status_code == 200 and len(r.json()) == 1
    assert r.headers["ETag"] == '"v1"'
    assert_not_modified(get(urls, path, token, **{"If-None-Match": 'W/"v1"'}), '"v1"')
    update()
    r = get(urls, path, token, **{"If-None-Match": '"v1"'})
    assert r.status_code == 200 and len(r.json()) == 2
    assert r.headers["ETag"] == '"v2"'


def test_partner_deposit_is_read_back_with_its_etag(urls, keys):
    token = keys.create("partner", regions="84")
    r = requests.post(f"{urls['submission']}/v1/dossiers", json=partner_body(),
                      headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())}, timeout=10)
    assert r.status_code == 201, r.text
    path = f"/v1/dossiers/{r.json()['id']}"
    r = get(urls, path, token)
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"v{r.json()["version"]}"' == '"v1"'
    assert_not_modified(get(urls, path, token, **{"If-None-Match": '"v1"'}), '"v1"')


# ---- the list's limit ------------------------------------------------------------------------

LISTS = (("submission", "/v1/dossiers"), ("instruction", "/v1/dossiers"),
         ("funding", "/v1/agreements"))


def limit_problem(urls, service, path, token, value):
    r = requests.get(f"{urls[service]}{path}", params={"limit": value}, headers=bearer(token),
                     timeout=10)
    assert r.status_code == 400, (service, value, r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json")
    p = r.json()
    return {"status": p["status"], "type": p["type"], "title": p["title"],
            "detail": p["detail"], "errors": p.get("errors")}


def test_list_limit_out_of_bounds_is_the_same_problem_everywhere(urls, keys):
    token = keys.create("national_admin")
    want = {"status": 400, "type": "urn:ptce:problem:invalid", "title": None,
            "detail": "invalid list parameters",
            "errors": [{"field": "limit", "message": "must be an integer from 1 to 200"}]}
    for value in ("0", "201", "abc", "-1", "1.5", "+5", " 5", "", "99999999999999999999"):
        shapes = [limit_problem(urls, s, p, token, value) for s, p in LISTS]
        want["title"] = shapes[0]["title"]
        assert shapes == [want] * len(LISTS), (value, shapes)
    # The bounds themselves are accepted.
    for value in ("1", "200"):
        r = requests.get(f"{urls['submission']}/v1/dossiers", params={"limit": value},
                         headers=bearer(token), timeout=10)
        assert r.status_code == 200, (value, r.text)
        assert len(r.json()["items"]) <= int(value)
