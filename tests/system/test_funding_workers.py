"""Funding's handlers run on the database threads (HTTP_DB), not on the HTTP workers.

Funding is restarted with 2 HTTP workers (and the default 8 database threads). The test holds
the row of a support action under a lock, so that more enrolments than there are workers wait
for it inside their handlers; another funding read must still answer at once. When a handler
held its worker while it waited, the waiting enrolments held both workers: the read queued
behind them until the lock went away (and only 2 enrolments at a time reached the database).
"""
import threading
import time
import uuid

import psycopg
import pytest
import requests

from conftest import bearer, sql, wait_until
from test_funding_support import action_body, key_id, laureates

HTTP_THREADS = 2
HELD = 2 * HTTP_THREADS  # more requests waiting on the lock than there are workers
PROMPT_S = 1.5  # a read must answer within this while the enrolments wait
TIMEOUT = 15


@pytest.fixture(scope="module")
def fund(urls, stack):
    """Funding with 2 HTTP workers for this module, and as run.sh started it afterwards."""
    stack.stop_service("funding")
    try:
        stack.start_service("funding", PTCE_HTTP_THREADS=str(HTTP_THREADS))
        yield urls["funding"]
    finally:
        stack.stop_service("funding")
        stack.start_service("funding")


def waiting_enrolments(db):
    """Funding's sessions waiting for the lock of an action's row (support_enrol.c)."""
    return sql(db, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'ptce_funding'"
                   " AND wait_event_type = 'Lock' AND query LIKE '%%FROM support_action%%FOR UPDATE'"
               )[0][0]


def test_requests_waiting_on_a_row_lock_do_not_hold_the_workers(db, admin_url, fund, keys):
    admin = bearer(keys.create("national_admin"))
    partner_token = keys.create("partner", regions="84")
    partner = bearer(partner_token)
    ptce = laureates(db, HELD)
    r = requests.post(f"{fund}/v1/support/actions", headers=admin, timeout=TIMEOUT,
                      json=action_body(capacity=HELD, partner_key_id=key_id(partner_token)))
    assert r.status_code == 201, r.text
    action = r.json()["id"]
    # Both keys are known to the auth cache before the lock is taken.
    assert requests.get(f"{fund}/v1/support/actions", headers=partner,
                        timeout=TIMEOUT).status_code == 200
    codes = []

    def enrol(dossier):
        r = requests.post(f"{fund}/v1/support/enrolments", headers={
            **partner, "Idempotency-Key": str(uuid.uuid4())},
            json={"action_id": action, "dossier_id": dossier}, timeout=TIMEOUT)
        codes.append(r.status_code)

    threads = [threading.Thread(target=enrol, args=(d,)) for d in ptce]
    with psycopg.connect(admin_url) as holder:  # one transaction, open until the commit below
        sql(holder, "SELECT 1 FROM funding.support_action WHERE id = %s FOR UPDATE", action)
        for t in threads:
            t.start()
        try:
            # Below the statement timeout (5 s) that would cancel the waiting statements.
            wait_until(lambda: waiting_enrolments(db) == HELD, timeout=3.5,
                       what=f"{HELD} enrolments waiting on the row lock at once")
            started = time.monotonic()
            r = requests.get(f"{fund}/v1/support/actions", params={"limit": 1}, headers=admin,
                             timeout=PROMPT_S)
            elapsed = time.monotonic() - started
        finally:
            holder.commit()
            for t in threads:
                t.join(TIMEOUT)
    assert r.status_code == 200 and elapsed < PROMPT_S, f"{r.status_code} in {elapsed:.2f} s"
    assert sorted(codes) == [201] * HELD, codes
