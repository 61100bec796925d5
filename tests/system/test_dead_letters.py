"""Nothing may wedge a stream: the largest deposit goes through, a refused event is set aside.

* A partner deposit just under the DEFAULT 1 MiB body limit (tests/run.sh gives the services
  64 KiB, so submission is restarted with the default for this test, then restored), with every
  stored field at its maximum, is published and reaches instruction's projection, and an
  ordinary deposit after it too (unknown keys being refused at every level, the stored fields
  bound the event far below the producer's and the broker's limits).
* An outbox row Kafka refuses for good (9 MiB, over every limit, written as the database owner)
  is dead-lettered with its error, counted in /metrics and listed by `ptce-admin outbox dead`;
  the events of other dossiers keep flowing, the later event of the same dossier waits, and once
  an operator mended the row and ran `ptce-admin outbox replay`, both go out, in order; or,
  after `ptce-admin outbox discard`, the refused one never goes and the next one does.
"""
import json
import uuid
from datetime import datetime, timezone

import pytest
import requests

from conftest import bearer, sql, wait_until
from test_exactly_once import metric
from test_http_bad_input import valid_body

TOPIC = "ptce.submission.events"
DEFAULT_BODY_LIMIT = 1048576  # PTCE_HTTP_BODY_LIMIT's default in common/service.c
LIBRDKAFKA_DEFAULT_MAX = 1000000  # message.max.bytes before it was raised


@pytest.fixture()
def default_body_limit(stack):
    """Submission runs with the default body limit for the test, and as before after it."""
    stack.stop_service("submission")
    try:
        stack.start_service("submission", PTCE_HTTP_BODY_LIMIT=str(DEFAULT_BODY_LIMIT))
        yield
    finally:
        stack.stop_service("submission")
        stack.start_service("submission")


def deposit(urls, token, body_bytes):
    r = requests.post(urls["submission"] + "/v1/dossiers", data=body_bytes,
                      headers={**bearer(token), "Content-Type": "application/json",
                               "Idempotency-Key": str(uuid.uuid4())}, timeout=60)
    assert r.status_code == 201, f"{r.status_code}: {r.text[:500]}"
    return r.json()["id"]


def projected(db, dossier_id):
    rows = sql(db, "SELECT events_applied FROM instruction.dossier WHERE id = %s", dossier_id)
    return rows[0][0] if rows else 0


def test_deposit_at_the_default_body_limit_reaches_instruction(db, urls, keys, default_body_limit):
    """Every stored field at its maximum, and the body padded to just under the default limit
    with partner_reference (accepted, not stored): nothing a partner can send makes an event
    the producer, the topic or the broker would refuse."""
    token = keys.create("partner")
    body = valid_body(
        ptce_name="p" * 300, summary="s" * 20000,
        carrier={"siret": "73282932000074", "name": "c" * 300, "legal_form": "l" * 100},
        territory={"name": "t" * 300, "region": "84"},
        members=[{"name": "m" * 300, "siret": "73282932000074", "kind": "ess_enterprise"}
                 for _ in range(100)])
    body["partner_reference"] = ""
    base = len(json.dumps(body, separators=(",", ":")).encode())
    body["partner_reference"] = "r" * (DEFAULT_BODY_LIMIT - base - 512)
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert DEFAULT_BODY_LIMIT - 1024 < len(raw) < DEFAULT_BODY_LIMIT

    big = deposit(urls, token, raw)
    ordinary = deposit(urls, token, json.dumps(valid_body()).encode())
    for dossier_id in (big, ordinary):
        wait_until(lambda: sql(db, "SELECT count(*) FROM submission.outbox WHERE key = %s"
                                   " AND sent_at IS NOT NULL", dossier_id)[0][0] == 1,
                   timeout=30, what=f"the event of dossier {dossier_id} acknowledged")
        wait_until(lambda: projected(db, dossier_id) == 1, timeout=30,
                   what=f"dossier {dossier_id} in instruction's projection")
    size, dead = sql(db, "SELECT octet_length(payload), dead_at IS NOT NULL FROM submission.outbox"
                         " WHERE key = %s", big)[0]
    # The stored fields are bounded, so the largest event stays far below every limit.
    assert size < LIBRDKAFKA_DEFAULT_MAX and not dead, (size, dead)
    members = sql(db, "SELECT jsonb_array_length(snapshot->'members') FROM instruction.dossier"
                      " WHERE id = %s", big)[0][0]
    assert members == 100


def event(key, etype, seq, pad=0, eid=None):
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    eid = eid or str(uuid.uuid4())
    data = {"dossier": {"state": "deposited", "region": "84", "title": f"t{seq}", "wave": "2026"}}
    if pad:
        data["pad"] = "p" * pad
    return eid, json.dumps({"specversion": "1.0", "id": eid, "source": "/test/dead-letters",
                            "type": etype, "subject": key, "time": now,
                            "datacontenttype": "application/json", "data": data},
                           separators=(",", ":"))


def outbox_row(db, eid):
    return sql(db, "SELECT id, sent_at IS NOT NULL, dead_at IS NOT NULL, attempts,"
                   " coalesce(last_error, '') FROM submission.outbox WHERE event_id = %s", eid)[0]


def test_refused_row_is_set_aside_and_replayed(db, urls, keys):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    a1, a1_payload = event(a, "dossier.deposited", 1, pad=9 * 1024 * 1024)
    a2, a2_payload = event(a, "dossier.updated", 2)
    b1, b1_payload = event(b, "dossier.deposited", 1)
    dead_before = metric(urls["submission"], "ptce_outbox_dead_letters_total")
    with db.transaction():
        for eid, key, etype, payload in ((a1, a, "dossier.deposited", a1_payload),
                                         (a2, a, "dossier.updated", a2_payload),
                                         (b1, b, "dossier.deposited", b1_payload)):
            sql(db, "INSERT INTO submission.outbox (event_id, topic, key, type, payload)"
                    " VALUES (%s, %s, %s, %s, %s)", eid, TOPIC, key, etype, payload)

    # The refused row is set aside at once; the other dossier's event goes on to instruction.
    wait_until(lambda: outbox_row(db, a1)[2], timeout=30, what="the 9 MiB row dead-lettered")
    row_id, sent, _, attempts, error = outbox_row(db, a1)
    assert not sent and attempts == 1 and "too large" in error.lower(), (attempts, error)
    wait_until(lambda: outbox_row(db, b1)[1], timeout=30, what="the other dossier's event sent")
    wait_until(lambda: projected(db, b) == 1, timeout=30, what="the other dossier projected")
    # The later event of the same dossier waits behind the dead one, neither sent nor dead.
    assert outbox_row(db, a2)[1:3] == (False, False)
    wait_until(lambda: metric(urls["submission"], "ptce_outbox_dead_letters") >= 1, timeout=15,
               what="ptce_outbox_dead_letters >= 1")
    assert metric(urls["submission"], "ptce_outbox_dead_letters_total") == dead_before + 1
    listing = keys._run("outbox", "dead", "--service", "submission")
    line = next((ln for ln in listing.splitlines() if ln.split()[:2] == [str(row_id), a]), None)
    assert line and "too large" in line.lower() and "dossier.deposited" in line, listing
    assert outbox_row(db, a2)[1:3] == (False, False)
    assert projected(db, a) == 0

    # An operator mends the event (here: drops the padding) and replays it: both go, in order.
    sql(db, "UPDATE submission.outbox SET payload = %s WHERE id = %s",
        event(a, "dossier.deposited", 1, eid=a1)[1], row_id)
    assert keys._run("outbox", "replay", "--service", "submission", str(row_id)) == f"replayed {row_id}"
    wait_until(lambda: outbox_row(db, a2)[1], timeout=30, what="the waiting event sent")
    assert outbox_row(db, a1)[1:3] == (True, False)
    wait_until(lambda: projected(db, a) == 2, timeout=30, what="both events of the dossier applied")
    order = [r[0] for r in sql(db, "SELECT event_id::text FROM instruction.inbox WHERE key = %s"
                                   " ORDER BY seq", a)]
    assert order == [a1, a2]
    assert sql(db, "SELECT last_event_id::text FROM instruction.dossier WHERE id = %s", a)[0][0] == a2
    wait_until(lambda: metric(urls["submission"], "ptce_outbox_dead_letters") == 0, timeout=15,
               what="ptce_outbox_dead_letters back to 0")
    assert str(row_id) not in [ln.split()[0] for ln in
                               keys._run("outbox", "dead", "--service", "submission").splitlines()]


def test_discarded_row_lets_its_dossier_flow(db, urls, keys):
    c = str(uuid.uuid4())
    c1, c1_payload = event(c, "dossier.deposited", 1, pad=9 * 1024 * 1024)
    c2, c2_payload = event(c, "dossier.updated", 2)
    with db.transaction():
        for eid, etype, payload in ((c1, "dossier.deposited", c1_payload),
                                    (c2, "dossier.updated", c2_payload)):
            sql(db, "INSERT INTO submission.outbox (event_id, topic, key, type, payload)"
                    " VALUES (%s, %s, %s, %s, %s)", eid, TOPIC, c, etype, payload)
    wait_until(lambda: outbox_row(db, c1)[2], timeout=30, what="the 9 MiB row dead-lettered")
    row_id = outbox_row(db, c1)[0]
    assert outbox_row(db, c2)[1:3] == (False, False)
    # An operator gives up on the event: it is never sent, and the dossier's next one goes.
    assert keys._run("outbox", "discard", "--service", "submission", str(row_id)) == \
        f"discarded {row_id}"
    wait_until(lambda: outbox_row(db, c2)[1], timeout=30, what="the waiting event sent")
    assert sql(db, "SELECT sent_at IS NULL, dead_at IS NULL, discarded_at IS NOT NULL"
                   " FROM submission.outbox WHERE id = %s", row_id)[0] == (True, True, True)
    wait_until(lambda: projected(db, c) == 1, timeout=30, what="the dossier projected")
    wait_until(lambda: metric(urls["submission"], "ptce_outbox_dead_letters") == 0, timeout=15,
               what="ptce_outbox_dead_letters back to 0")
