"""Exactly once, measured: submission's outbox → Kafka → instruction's inbox.

Events are committed straight into submission.outbox as the database owner (as the service's
own transactions would), the relay publishes them, and instruction's inbox applies each one to
instruction.dossier. Every scenario checks the same four facts with counts:

  * every outbox row was acknowledged by the broker (sent_at is set);
  * instruction.inbox holds exactly one row per event id;
  * per dossier, instruction.dossier.events_applied equals the events sent for it
    (nothing applied twice, nothing lost) and last_event_id is the last one sent;
  * per dossier, the inbox's apply order (seq) follows the order the events were committed.

Scenarios: a plain run; the relay SIGKILLed mid-round, after the broker acknowledged a round
and before its rows were marked sent (so duplicates surely reach Kafka); the consumer crashing
between its database commit and its offset store (PTCE_FAILPOINT_INBOX_EXIT_AFTER); the broker
stopped for 10 s; a statement of the relay, then of the inbox, cancelled by PostgreSQL. Each
uses its own fresh dossier ids, so the tests do not see each other's events. Run with -s to see
the figures measured.
"""
import json
import os
import re
import signal
import threading
import time
import uuid
from datetime import datetime, timezone

import psycopg
import pytest
import requests

from conftest import sql, wait_until

TOPIC = "ptce.submission.events"
SERVICES = ("submission", "instruction", "funding")
NKEYS = 50
PER_KEY = 40  # 50 keys x 40 = 2000 events per scenario
BATCH = 100   # rows per transaction
DRAIN_TIMEOUT = 60.0


# ---- helpers ----

class Run:
    """One scenario's events: NKEYS fresh dossiers, PER_KEY events each, interleaved."""

    def __init__(self, name, nkeys=NKEYS, per_key=PER_KEY):
        self.tag = f"/test/exactly-once/{name}/{uuid.uuid4()}"
        self.keys = [str(uuid.uuid4()) for _ in range(nkeys)]
        self.per_key = per_key
        self.events = []  # (event_id, key, type, payload, seq) in commit order
        self.by_id = {}
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for seq in range(per_key):
            for key in self.keys:
                eid = str(uuid.uuid4())
                etype = "dossier.deposited" if seq == 0 else "dossier.updated"
                payload = json.dumps({
                    "specversion": "1.0", "id": eid, "source": self.tag, "type": etype,
                    "subject": key, "time": now, "datacontenttype": "application/json",
                    "data": {"seq": seq, "dossier": {"state": "deposited", "region": "84",
                                                     "title": f"t{seq}", "wave": "2026",
                                                     "seq": seq}},
                }, separators=(",", ":"))
                self.events.append((eid, key, etype, payload, seq))
                self.by_id[eid] = (key, seq)
        self.ids = [e[0] for e in self.events]
        self.last_id = {}
        for eid, key, _, _, _ in self.events:
            self.last_id[key] = eid

    def batches(self, size=BATCH):
        for i in range(0, len(self.events), size):
            yield self.events[i:i + size]


def insert_batch(conn, rows):
    """One transaction: the rows get outbox ids in the order given (the commit order)."""
    with conn.transaction():
        sql(conn,
            "INSERT INTO submission.outbox (event_id, topic, key, type, payload)"
            " SELECT e, %s, k, t, p FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[])"
            " WITH ORDINALITY AS u(e, k, t, p, n) ORDER BY n",
            TOPIC, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
            [r[3] for r in rows])


def insert_all(conn, run, pause=0.0, on_batch=None):
    for i, rows in enumerate(run.batches()):
        insert_batch(conn, rows)
        if on_batch:
            on_batch(i)
        if pause:
            time.sleep(pause)


class Inserter(threading.Thread):
    """Commits a run's batches from its own connection while the main thread breaks things."""

    def __init__(self, admin_url, run, pause):
        super().__init__(daemon=True)
        self.admin_url, self.run_, self.pause = admin_url, run, pause
        self.batches_done = 0
        self.error = None

    def run(self):
        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                def count(i):
                    self.batches_done = i + 1
                insert_all(conn, self.run_, self.pause, count)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def finish(self, timeout=60):
        self.join(timeout)
        assert not self.is_alive(), "the inserter did not finish"
        assert self.error is None, f"inserting events failed: {self.error!r}"


def unsent(db, run):
    return sql(db, "SELECT count(*) FROM submission.outbox WHERE event_id = ANY(%s::uuid[])"
                   " AND sent_at IS NULL", run.ids)[0][0]


def sent(db, run):
    return sql(db, "SELECT count(sent_at) FROM submission.outbox WHERE event_id = ANY(%s::uuid[])",
               run.ids)[0][0]


def applied(db, run):
    return sql(db, "SELECT count(*) FROM instruction.inbox WHERE event_id = ANY(%s::uuid[])",
               run.ids)[0][0]


def dead_letters(db, run):
    return sql(db, "SELECT count(*) FROM instruction.inbox_dead_letter WHERE strpos(payload, %s) > 0",
               run.tag)[0][0]


def wait_drained(db, run, timeout=DRAIN_TIMEOUT):
    """Waits until every event is acknowledged and applied; returns the seconds it took."""
    start = time.monotonic()
    n = len(run.ids)

    def done():
        return unsent(db, run) == 0 and applied(db, run) == n

    deadline = start + timeout
    while time.monotonic() < deadline:
        if done():
            return time.monotonic() - start
        time.sleep(0.2)
    pytest.fail(f"not drained after {timeout}s: {unsent(db, run)} outbox rows unsent, "
                f"{applied(db, run)}/{n} events in the inbox, {dead_letters(db, run)} dead letters")


def check_exactly_once(db, run):
    """The four facts of the module docstring, for one run."""
    n = len(run.ids)
    rows = sql(db, "SELECT count(*), count(sent_at) FROM submission.outbox"
                   " WHERE event_id = ANY(%s::uuid[])", run.ids)[0]
    assert rows == (n, n), f"outbox: {rows[0]} rows, {rows[1]} sent; expected {n} and {n}"

    inbox = sql(db, "SELECT event_id::text, seq, key, type, topic FROM instruction.inbox"
                    " WHERE event_id = ANY(%s::uuid[])", run.ids)
    ids = [r[0] for r in inbox]
    assert len(ids) == n and len(set(ids)) == n, \
        f"inbox: {len(ids)} rows for {len(set(ids))} distinct ids; expected {n} once each"
    assert all(r[4] == TOPIC for r in inbox)
    wrong_key = [r[0] for r in inbox if r[2] != run.by_id[r[0]][0]]
    assert not wrong_key, f"inbox rows with a key other than their event's: {wrong_key[:5]}"

    per_key = {}
    for eid, seq, key, _, _ in sorted(inbox, key=lambda r: r[1]):
        per_key.setdefault(key, []).append(run.by_id[eid][1])
    out_of_order = {k: v for k, v in per_key.items() if v != list(range(run.per_key))}
    assert not out_of_order, "events applied out of order for %d dossiers, e.g. %s" % (
        len(out_of_order), next(iter(out_of_order.items())))

    dossiers = {r[0]: (r[1], r[2]) for r in sql(
        db, "SELECT id::text, events_applied, last_event_id::text FROM instruction.dossier"
            " WHERE id = ANY(%s::uuid[])", run.keys)}
    assert len(dossiers) == len(run.keys), \
        f"{len(run.keys) - len(dossiers)} dossiers missing from instruction.dossier"
    wrong = {k: v[0] for k, v in dossiers.items() if v[0] != run.per_key}
    assert not wrong, f"events_applied != {run.per_key} for {len(wrong)} dossiers: " \
                      f"{sorted(wrong.values())[:10]}"
    stale = [k for k, v in dossiers.items() if v[1] != run.last_id[k]]
    assert not stale, f"{len(stale)} dossiers do not end on their last event"
    assert dead_letters(db, run) == 0


def metric(url, name):
    """Sum of a metric's samples on a service's /metrics (0 when absent)."""
    text = requests.get(url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", line)
        if m:
            total += float(m.group(1))
    return int(total)


def ready(url):
    try:
        return requests.get(url + "/readyz", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def wait_all_ready(urls, timeout=60):
    for name in SERVICES:
        wait_until(lambda: ready(urls[name]), timeout=timeout, interval=0.3,
                   what=f"{name} /readyz 200")


def log_size(stack, name):
    try:
        return os.path.getsize(stack.log_path(name))
    except OSError:
        return 0


def log_since(stack, name, offset):
    with open(stack.log_path(name), "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def report(name, **figures):
    print(f"\n[exactly-once] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture(autouse=True)
def stack_restored(stack, urls):
    """Whatever a scenario broke, the broker and the three services are back and ready after it."""
    wait_all_ready(urls)
    yield
    if not stack.kafka_running():
        stack.kafka("start")
    for name in SERVICES:
        if not stack.alive(name):
            stack.start_service(name)
    wait_all_ready(urls)


# ---- scenarios ----

def test_plain_run_is_exactly_once(db, urls):
    run = Run("plain")
    dup0 = metric(urls["instruction"], "ptce_inbox_duplicates_total")
    t0 = time.monotonic()
    insert_all(db, run)
    inserted = time.monotonic() - t0
    drained = wait_drained(db, run)
    check_exactly_once(db, run)
    dups = metric(urls["instruction"], "ptce_inbox_duplicates_total") - dup0
    report("plain", events=len(run.ids), keys=len(run.keys), transactions=len(run.ids) // BATCH,
           insert_s=round(inserted, 2), drain_s=round(drained, 2),
           events_per_s=round(len(run.ids) / (inserted + drained)), duplicates_absorbed=dups)


HOLD_LOCK = 0x7074_6365  # advisory lock the test holds to pause the relay before marking rows


@pytest.fixture()
def relay_hold(db, admin_url):
    """A switch that stops submission's relay between "the broker acknowledged the round" and
    "the round's rows are marked sent": a statement trigger on the UPDATE of submission.outbox
    waits for an advisory lock while the test holds it. Removed after the test."""
    sql(db, f"""CREATE FUNCTION submission.test_hold_mark_sent() RETURNS trigger
                LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock({HOLD_LOCK});
                RETURN NULL; END $$""")
    sql(db, "CREATE TRIGGER test_hold_mark_sent BEFORE UPDATE ON submission.outbox"
            " FOR EACH STATEMENT EXECUTE FUNCTION submission.test_hold_mark_sent()")
    with psycopg.connect(admin_url, autocommit=True) as holder:
        try:
            yield holder
        finally:
            sql(holder, "SELECT pg_advisory_unlock_all()")
            sql(db, "SET lock_timeout = '20s'")
            sql(db, "DROP TRIGGER IF EXISTS test_hold_mark_sent ON submission.outbox")
            sql(db, "DROP FUNCTION IF EXISTS submission.test_hold_mark_sent()")
            sql(db, "RESET lock_timeout")


def published_unmarked(db, run):
    """Events instruction already applied whose outbox rows are not marked sent."""
    return sql(db, "SELECT count(*) FROM instruction.inbox i JOIN submission.outbox o"
                   " USING (event_id) WHERE o.sent_at IS NULL AND o.event_id = ANY(%s::uuid[])",
               run.ids)[0][0]


def test_relay_killed_mid_stream(db, urls, stack, admin_url, relay_hold):
    run = Run("relay-kill")
    dup0 = metric(urls["instruction"], "ptce_inbox_duplicates_total")
    victim = stack.pid("submission")
    inserter = Inserter(admin_url, run, pause=0.05)
    t0 = time.monotonic()
    inserter.start()
    # Let a few rounds through, then hold the next one after its publication.
    wait_until(lambda: sent(db, run) >= 3 * BATCH, timeout=20, interval=0.01,
               what="the relay to publish part of the run")
    sql(relay_hold, "SELECT pg_advisory_lock(%s)", HOLD_LOCK)
    wait_until(lambda: published_unmarked(db, run) > 0, timeout=20, interval=0.02,
               what="a round published to Kafka but not yet marked sent")
    os.kill(victim, signal.SIGKILL)
    assert stack.wait_exit("submission", 10), "submission survived SIGKILL"
    killed_at_batch = inserter.batches_done
    sent_at_kill = sent(db, run)
    time.sleep(1)  # instruction finishes applying what had reached Kafka
    in_doubt = published_unmarked(db, run)
    sql(relay_hold, "SELECT pg_advisory_unlock(%s)", HOLD_LOCK)  # the dead relay's UPDATE
    inserter.finish()                                          # proceeds, then rolls back
    time.sleep(0.5)
    unsent_after_kill = unsent(db, run)
    assert sent(db, run) == sent_at_kill, "rows marked sent by a relay that was killed"
    assert unsent_after_kill > 0 and in_doubt > 0
    stack.start_service("submission")
    assert stack.pid("submission") != victim
    drained = wait_drained(db, run)
    check_exactly_once(db, run)
    republished = metric(urls["submission"], "ptce_outbox_published_total")
    dups = metric(urls["instruction"], "ptce_inbox_duplicates_total") - dup0
    assert republished >= unsent_after_kill
    # Every event that was in Kafka but not marked sent went out again and was absorbed.
    assert dups >= in_doubt, f"{in_doubt} events were published twice, {dups} duplicates seen"
    report("relay SIGKILL", events=len(run.ids), killed_after_batches=killed_at_batch,
           sent_before_kill=sent_at_kill, published_not_marked_at_kill=in_doubt,
           unsent_after_kill=unsent_after_kill, published_by_new_relay=republished,
           duplicates_absorbed=dups, total_s=round(time.monotonic() - t0, 2),
           drain_after_restart_s=round(drained, 2))


def test_consumer_crash_between_commit_and_offset_store(db, urls, stack):
    exit_after = 300
    run = Run("inbox-crash")
    stack.stop_service("instruction")  # SIGTERM: stores and commits its offsets, leaves the group
    mark = log_size(stack, "instruction")
    stack.start_service("instruction", PTCE_FAILPOINT_INBOX_EXIT_AFTER=str(exit_after))
    crashing = stack.pid("instruction")
    t0 = time.monotonic()
    insert_all(db, run)
    assert stack.wait_exit("instruction", 60), \
        f"instruction did not hit its failpoint after {exit_after} commits"
    crash_s = time.monotonic() - t0
    log = log_since(stack, "instruction", mark)
    assert "inbox.failpoint_exit" in log, "instruction exited, but not at its failpoint:\n" + log[-2000:]
    applied_at_crash = applied(db, run)
    # The failpoint counts every inbox commit; only this run's events were flowing.
    assert 0 < applied_at_crash <= exit_after, applied_at_crash
    assert applied_at_crash < len(run.ids)

    stack.start_service("instruction")
    assert stack.pid("instruction") != crashing
    t1 = time.monotonic()
    drained = wait_drained(db, run, timeout=90)  # the dead member holds its partitions until
    check_exactly_once(db, run)                  # its session times out (45 s by default)
    # The event applied just before the crash had no stored offset: it came again, and the
    # inbox ignored it.
    dups = metric(urls["instruction"], "ptce_inbox_duplicates_total")
    assert dups >= 1, "no redelivery was absorbed after the crash"
    report("consumer crash after commit", events=len(run.ids), failpoint=exit_after,
           applied_at_crash=applied_at_crash, crash_after_s=round(crash_s, 2),
           duplicates_absorbed=dups, drain_after_restart_s=round(drained, 2),
           total_s=round(time.monotonic() - t0, 2), restart_to_drain_s=round(time.monotonic() - t1, 2))


def test_broker_down_for_ten_seconds(db, urls, stack, admin_url):
    run = Run("broker-down")
    dup0 = metric(urls["instruction"], "ptce_inbox_duplicates_total")
    fail0 = metric(urls["submission"], "ptce_outbox_delivery_failures_total")
    inserter = Inserter(admin_url, run, pause=0.5)  # 20 batches over ~10 s
    t0 = time.monotonic()
    inserter.start()
    wait_until(lambda: inserter.batches_done >= 3, timeout=20, interval=0.05,
               what="the first batches")
    stack.kafka("stop")
    stopped_at = time.monotonic()
    sent_at_stop = sent(db, run)
    time.sleep(10)
    stack.kafka("start")
    down_s = time.monotonic() - stopped_at
    inserter.finish()
    drained = wait_drained(db, run, timeout=90)
    check_exactly_once(db, run)
    wait_all_ready(urls)
    dups = metric(urls["instruction"], "ptce_inbox_duplicates_total") - dup0
    fails = metric(urls["submission"], "ptce_outbox_delivery_failures_total") - fail0
    report("broker down", events=len(run.ids), sent_before_stop=sent_at_stop,
           broker_unavailable_s=round(down_s, 1), delivery_failures_retried=fails,
           duplicates_absorbed=dups, drain_after_restart_s=round(drained, 2),
           total_s=round(time.monotonic() - t0, 2))


# ---- a statement cancelled under the relay or the inbox ----
#
# PostgreSQL cancels a statement (pg_cancel_backend, a lock or statement timeout, a recovery
# conflict) without closing the connection: the transaction is left aborted until ROLLBACK.
# A relay or inbox that returned without it stayed "idle in transaction (aborted)", every later
# BEGIN failing with 25P02, and relayed or applied nothing until restarted.

def cancel_blocked(db, holder, role, query_prefix, timeout=10):
    """Holds the table lock already taken by holder until role's statement starting with
    query_prefix waits on it, cancels that statement, then releases the lock."""
    pids = wait_until(lambda: [r[0] for r in sql(
        db, "SELECT pid FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock'"
            " AND query LIKE %s", role, query_prefix + "%")], timeout=timeout, interval=0.05,
        what=f"{role} to wait on the lock")
    assert sql(db, "SELECT pg_cancel_backend(%s)", pids[0]) == [(True,)]
    holder.rollback()


def recover_or_restart(db, run, stack, name):
    """The events of run drained? If not, restarts the wedged service so later tests can run."""
    if unsent(db, run) or applied(db, run) != len(run.ids):
        stack.stop_service(name)
        stack.start_service(name)


def test_relay_recovers_from_a_cancelled_statement(db, admin_url, stack):
    run = Run("relay-cancel", nkeys=5, per_key=4)
    try:
        with psycopg.connect(admin_url) as holder:
            holder.execute("LOCK TABLE submission.outbox IN ACCESS EXCLUSIVE MODE")
            # The relay's next round (it wakes every second) waits on the lock.
            cancel_blocked(db, holder, "ptce_submission", "SELECT id, topic, key, payload, type FROM outbox")
        insert_all(db, run)
        drained = wait_drained(db, run, timeout=12)
        check_exactly_once(db, run)
        report("relay statement cancelled", events=len(run.ids), drain_s=round(drained, 2))
    finally:
        recover_or_restart(db, run, stack, "submission")


def test_inbox_recovers_from_a_cancelled_statement(db, admin_url, stack):
    first = Run("inbox-cancel-first", nkeys=1, per_key=1)
    run = Run("inbox-cancel", nkeys=5, per_key=4)
    try:
        with psycopg.connect(admin_url) as holder:
            holder.execute("LOCK TABLE instruction.inbox IN ACCESS EXCLUSIVE MODE")
            insert_all(db, first)  # relayed, consumed, and its inbox INSERT waits on the lock
            cancel_blocked(db, holder, "ptce_instruction", "INSERT INTO inbox")
        insert_all(db, run)
        drained = wait_drained(db, run, timeout=12)
        wait_drained(db, first, timeout=5)
        check_exactly_once(db, first)
        check_exactly_once(db, run)
        report("inbox statement cancelled", events=len(run.ids) + 1, drain_s=round(drained, 2))
    finally:
        recover_or_restart(db, first, stack, "instruction")
        recover_or_restart(db, run, stack, "instruction")
