"""The services' own connections (outbox relay, inbox consumer) carry PTCE_DB_STATEMENT_TIMEOUT_MS
like the pool's: a statement stuck behind a lock is cancelled by PostgreSQL (SQLSTATE 57014)
after 5 s (the default, which tests/run.sh keeps), logged, and retried, instead of holding its
thread for as long as the lock lasts.

A trigger makes the relay's UPDATE of submission.outbox, then the consumer's INSERT into
instruction.inbox, wait for an advisory lock the test holds for 8 s while a deposit's event is
on its way; each service must log the cancellation, and the event must still arrive, once.
"""
import threading
import time
import uuid

import psycopg
import pytest
import requests

from conftest import bearer, partner_body, sql, wait_until

HOLD_S = 8.0
HOLD_LOCK = 0x7074_6374  # the advisory lock the triggers wait for


def cancelled_statements(stack, service):
    """The db.error lines of SQLSTATE 57014 (statement timeout) in the service's log."""
    with open(stack.log_path(service), encoding="utf-8", errors="replace") as f:
        return [line for line in f if '"db.error"' in line and '"57014"' in line]


@pytest.fixture()
def hold(db, admin_url):
    """hold(table, event): the table's writes of that kind wait while the test holds the lock."""
    made = []

    def arm(table, when):
        name = f"test_timeout_hold_{len(made)}"
        schema = table.split(".")[0]
        sql(db, f"CREATE FUNCTION {schema}.{name}() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN PERFORM pg_advisory_xact_lock({HOLD_LOCK}); RETURN NULL; END $$")
        sql(db, f"CREATE TRIGGER {name} BEFORE {when} ON {table}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{name}()")
        made.append((schema, name, table))

    with psycopg.connect(admin_url, autocommit=True) as holder:
        yield arm, holder
        sql(holder, "SELECT pg_advisory_unlock_all()")
    for schema, name, table in made:
        sql(db, f"DROP TRIGGER IF EXISTS {name} ON {table}")
        sql(db, f"DROP FUNCTION IF EXISTS {schema}.{name}()")


def deposit(urls, token):
    r = requests.post(urls["submission"] + "/v1/dossiers", json=partner_body(), timeout=10,
                      headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize("service,table,when", [
    ("submission", "submission.outbox", "UPDATE"),   # the relay marking its round sent
    ("instruction", "instruction.inbox", "INSERT"),  # the consumer recording the event
])
def test_own_connections_time_out(urls, keys, db, stack, hold, service, table, when):
    arm, holder = hold
    token = keys.create("partner", "84")
    before = len(cancelled_statements(stack, service))
    sql(holder, "SELECT pg_advisory_lock(%s)", HOLD_LOCK)
    arm(table, when)
    dossier = deposit(urls, token)
    wait_until(lambda: len(cancelled_statements(stack, service)) > before, timeout=HOLD_S,
               what=f"{service} logged a statement cancelled by its statement_timeout")
    sql(holder, "SELECT pg_advisory_unlock(%s)", HOLD_LOCK)
    wait_until(lambda: sql(db, "SELECT events_applied FROM instruction.dossier WHERE id = %s",
                           dossier) == [(1,)], timeout=30,
               what=f"the event applied once after {table} was released")
