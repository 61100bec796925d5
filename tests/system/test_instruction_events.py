"""Instruction's inbox dispatches submission's events by type (service_def.event_routes).

An event of a type instruction does not apply changes nothing: it is skipped before any
statement (not recorded in the inbox), counted in ptce_inbox_events_skipped_total; the key's
later events still flow. The events are written into submission's outbox, as its own code would, so that they
travel the real path: relay, broker, instruction's consumer.
"""
import json
import uuid
from datetime import datetime, timezone

from conftest import sql, wait_until
from test_exactly_once import metric

TOPIC = "ptce.submission.events"


def publish(db, key, etype, data):
    eid = str(uuid.uuid4())
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    payload = json.dumps({"specversion": "1.0", "id": eid, "source": "/test/instruction-events",
                          "type": etype, "subject": key, "time": now,
                          "datacontenttype": "application/json", "data": data})
    sql(db, "INSERT INTO submission.outbox (event_id, topic, key, type, payload)"
            " VALUES (%s, %s, %s, %s, %s)", eid, TOPIC, key, etype, payload)
    return eid


def in_inbox(db, eid):
    return sql(db, "SELECT type FROM instruction.inbox WHERE event_id = %s", eid)


def test_unknown_event_type_is_counted_and_skipped(db, urls):
    key = str(uuid.uuid4())
    dossier = {"dossier": {"state": "deposited", "region": "84", "title": "t", "wave": "2026",
                           "version": 1}}
    skipped = metric(urls["instruction"], "ptce_inbox_events_skipped_total")
    dead = sql(db, "SELECT count(*) FROM instruction.inbox_dead_letter")[0][0]

    unknown = publish(db, key, "dossier.archived", dossier)
    # The key's next event, of a type instruction applies, is projected as usual: on the same
    # partition, after the unknown one, so once it is applied the unknown one was consumed.
    known = publish(db, key, "dossier.deposited", dossier)
    wait_until(lambda: sql(db, "SELECT last_event_id::text FROM instruction.dossier"
                               " WHERE id = %s", key) == [(known,)],
               timeout=30, what="the deposited event projected")
    wait_until(lambda: metric(urls["instruction"], "ptce_inbox_events_skipped_total") > skipped,
               timeout=10, what="the skipped event counted")
    assert in_inbox(db, unknown) == [], "a skipped event is not recorded"
    assert in_inbox(db, known) == [("dossier.deposited",)]
    assert sql(db, "SELECT count(*) FROM instruction.inbox_dead_letter")[0][0] == dead
    assert sql(db, "SELECT events_applied FROM instruction.dossier WHERE id = %s", key) == [(1,)]
