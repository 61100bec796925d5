"""A client that follows next_cursor never misses a change, even when commits land out of order.

Three dossiers A, B, C are changed by writers that commit out of order: A's transaction takes its
place in the order first but commits last, while B and C commit in between and a reader pages
through (limit=1, so that its cursor moves past B to C). The writers are sessions of the
database owner running the statement the service runs for a new version (an UPDATE of the
row, as store.c's st_dossier_update does). Once A has committed, the
reader goes on from its cursor: it must have seen the new version of every one of them.
"""
import time
import uuid

import psycopg
import pytest
import requests

from conftest import bearer, partner_body, sql, wait_until

UPDATE = "UPDATE submission.dossier SET updated_at = now() WHERE id = %s"


def deposit(urls, partner, region):
    r = requests.post(urls["submission"] + "/v1/dossiers", timeout=10,
                      json=partner_body(territory={"name": "Pays d'ordre", "region": region}),
                      headers={**bearer(partner), "Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    return r.json()["id"]


class Reader:
    """A syncing client: follows next_cursor and keeps the last one it got."""

    def __init__(self, urls, token, region):
        self.url = urls["submission"] + "/v1/dossiers"
        self.headers = bearer(token)
        self.region = region
        self.cursor = None
        self.listed = set()  # ids listed since the last clear

    def sync(self):
        for _ in range(1000):
            params = {"region": self.region, "limit": 1, **({"cursor": self.cursor} if self.cursor else {})}
            r = requests.get(self.url, params=params, headers=self.headers, timeout=10)
            assert r.status_code == 200, r.text
            body = r.json()
            self.listed.update(item["id"] for item in body["items"])
            if body["next_cursor"] is None:
                return self.listed
            self.cursor = body["next_cursor"]
        pytest.fail("next_cursor never ended")


def test_out_of_order_commits_are_all_seen(urls, keys, admin_url):
    region = "76"
    partner = keys.create("partner", region)
    ids = [deposit(urls, partner, region) for _ in range(3)]
    a, b, c = ids
    reader = Reader(urls, keys.create("regional_instructor", region), region)
    wait_until(lambda: set(ids) <= reader.sync(), timeout=10, what="the three deposits listed")
    reader.listed.clear()

    with psycopg.connect(admin_url) as slow, psycopg.connect(admin_url, autocommit=True) as fast:
        sql(slow, UPDATE, a)  # A takes its place in the order first, and stays in flight
        sql(fast, UPDATE, b)  # B and C commit meanwhile
        sql(fast, UPDATE, c)
        reader.sync()         # the reader pages while A is in flight
        slow.commit()
    # Going on from where it stands, the reader must list every changed dossier again.
    wait_until(lambda: set(ids) <= reader.sync(), timeout=10,
               what="every change listed again by a client going on from its cursor")


def test_a_broker_outage_does_not_hold_the_list_back(urls, keys, stack):
    """The list serves changes older than every transaction in flight: the relay, stuck on a
    broker that does not answer, must not hold a transaction id meanwhile (no row locks)."""
    region = "75"
    partner = keys.create("partner", region)
    reader = Reader(urls, keys.create("regional_instructor", region), region)
    stack.kafka("stop")
    try:
        deposit(urls, partner, region)  # its NOTIFY starts a relay round that cannot finish
        time.sleep(1.0)
        late = deposit(urls, partner, region)
        wait_until(lambda: late in reader.sync(), timeout=5,
                   what="a deposit listed while the broker is down")
    finally:
        stack.kafka("start")
        # Leave the stack as it was found: every service ready again (its probe reconnected).
        for url in urls.values():
            wait_until(lambda u=url: requests.get(u + "/readyz", timeout=5).status_code == 200,
                       timeout=60, what=f"{url} ready again after the broker restart")


def test_cursors_are_opaque_and_sealed(urls, keys):
    """A cursor tells nothing (not the transaction ids, not the dossier id) and cannot be forged."""
    region = "53"
    partner = keys.create("partner", region)
    ids = [deposit(urls, partner, region) for _ in range(2)]
    reader = Reader(urls, keys.create("regional_instructor", region), region)
    wait_until(lambda: set(ids) <= reader.sync(), timeout=10, what="the deposits listed")
    r = requests.get(reader.url, params={"region": region, "limit": 1}, headers=reader.headers, timeout=10)
    page = r.json()
    cursor = page["next_cursor"]
    assert cursor and page["items"][0]["id"] not in cursor and not cursor.isdigit()
    assert "." not in cursor and all(c.isalnum() or c in "-_" for c in cursor)
    forged = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    r = requests.get(reader.url, params={"cursor": forged}, headers=reader.headers, timeout=10)
    assert r.status_code == 400 and any(e["field"] == "cursor" for e in r.json()["errors"]), r.text
