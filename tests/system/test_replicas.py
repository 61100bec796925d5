"""Two replicas of every service on one machine: the same results as with one.

A second replica of submission, instruction and funding is started beside the stack's own
(`stack.sh start-service NAME BUILD 1`: same database, same consumer group, port BASE+10+n,
application_name NAME-1) for this module and stopped at its end. Then:

  * DS webhooks and partner deposits go through either replica: every dossier is stored once,
    and instruction applies each of its events exactly once, in per-dossier order;
  * a stream of events is consumed by two instruction replicas, and another by two funding
    replicas (one consumer group each, sharing the partitions): exactly once, in order;
  * the reconciliation poller runs on one replica only (the DS fake counts its queries), and
    its leadership moves within one poll interval when its holder is SIGKILLed;
  * the replica holding submission's outbox relay lock (found in pg_locks) is SIGKILLed in the
    middle of a round: the other replica publishes within seconds, and nothing is lost or
    applied twice.
Run with -s to see the figures measured.
"""
import datetime as dt
import json
import os
import signal
import threading
import time
import uuid

import pytest
import requests

from conftest import bearer, sql, wait_until
from test_exactly_once import (  # noqa: F401 - relay_hold is a fixture
    BATCH, HOLD_LOCK, Inserter, Run, check_exactly_once, insert_all, metric, published_unmarked,
    relay_hold, sent, unsent, wait_all_ready, wait_drained)
from test_http_bad_input import valid_body
from test_submission_ds import (all_notices_done, changed, deposit, dossier_row, make_dossier,
                                now_paris, outbox, wait_dossier, webhook)

SERVICES = ("submission", "instruction", "funding")
DEMARCHE = 12345
POLL_INTERVAL_S = 1  # PTCE_DS_POLL_INTERVAL_S in tests/run.sh
INSTRUCTION_TOPIC = "ptce.instruction.events"

# Who holds an advisory lock, by the application_name stack.sh gives each replica's sessions.
# The poller's lock has two int4 keys (objsubid 2); the relay's one bigint key (objsubid 1)
# made of a sign-extended int4, whose low 32 bits are objid.
POLLER_HOLDER = ("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                 " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
                 " AND l.classid::bigint = (hashtext('ptce.ds_poller.submission')::bigint & 4294967295)"
                 " AND l.objid::bigint = %s")
RELAY_HOLDER = ("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.objid::bigint = (hashtext('ptce.outbox.submission')::bigint & 4294967295)")


def report(name, **figures):
    print(f"\n[replicas] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def replica_of(application_name):
    """'submission-1' → 1."""
    return int(application_name.rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def replicas(stack, urls):
    """Replica 1 of each service, started for the module; at its end replica 1 is stopped and
    replica 0 (which a test may have killed) is running again, as the stack was found."""
    wait_all_ready(urls)
    try:
        for name in SERVICES:
            stack.start_replica(name, 1)
        yield {name: [urls[name], stack.replica_url(name, 1)] for name in SERVICES}
    finally:
        for name in SERVICES:
            stack.stop_replica(name, 1)
            if not stack.alive(name):
                stack.start_service(name)
        wait_all_ready(urls)


@pytest.fixture()
def both_alive(stack, replicas):
    """Before and after each test: both replicas of every service run (a test kills one)."""
    def ensure():
        for name in SERVICES:
            for k in (0, 1):
                if not stack.replica_alive(name, k):
                    stack.start_replica(name, k)
    ensure()
    yield replicas
    ensure()


def applied_once_in_order(db, dossier_ids):
    """Every event of these dossiers in submission's outbox is sent, in instruction's inbox once,
    applied in outbox order per dossier, and counted once by the projection."""
    events = sql(db, "SELECT key, event_id::text, sent_at IS NOT NULL FROM submission.outbox"
                     " WHERE key = ANY(%s) ORDER BY id", dossier_ids)
    inbox = sql(db, "SELECT key, event_id::text FROM instruction.inbox WHERE key = ANY(%s)"
                    " ORDER BY seq", dossier_ids)
    if not all(e[2] for e in events) or len(inbox) < len(events):
        return None
    sent_order, applied_order = {}, {}
    for key, eid, _ in events:
        sent_order.setdefault(key, []).append(eid)
    for key, eid in inbox:
        applied_order.setdefault(key, []).append(eid)
    assert applied_order == sent_order, "inbox differs from the outbox (duplicates, or order)"
    projection = {r[0]: (r[1], r[2]) for r in sql(
        db, "SELECT id::text, events_applied, last_event_id::text FROM instruction.dossier"
            " WHERE id::text = ANY(%s)", dossier_ids)}
    assert projection == {k: (len(v), v[-1]) for k, v in sent_order.items()}
    return sent_order


def wait_applied(db, dossier_ids, timeout=30):
    return wait_until(lambda: applied_once_in_order(db, dossier_ids), timeout=timeout,
                      what="instruction to apply every event of the dossiers")


# ---- DS webhooks and partner deposits through either replica --------------------------------


def test_ds_webhooks_through_both_replicas(db, dsfake, both_alive):
    subs = both_alive["submission"]
    t0 = now_paris() - dt.timedelta(seconds=60)
    dossiers = [make_dossier(1001, updated=t0) for _ in range(8)]
    for i, d in enumerate(dossiers):
        deposit(dsfake, d)
        assert webhook({"submission": subs[i % 2]}, d["number"], updated=t0).status_code == 202
        if i % 3 == 0:  # DS retries: the same notification reaches the other replica too
            r = webhook({"submission": subs[(i + 1) % 2]}, d["number"], updated=t0)
            assert r.status_code == 202 and r.json()["duplicate"] is True, r.text
    rows = [wait_dossier(db, d["number"]) for d in dossiers]
    for d in dossiers:
        wait_until(lambda: all_notices_done(db, d["number"]), timeout=15, what="notices done")
    # Half of them change on DS; their webhooks go to the other replica.
    # DS's webhook carries the dossier's own dateDerniereModification: one moment for both (two
    # calls of now() across a second boundary made two notices of one change; CI saw 3 == 2).
    for i, d in enumerate(dossiers[:4]):
        t1 = now_paris()
        deposit(dsfake, changed(d, updated=t1, summary=f"revu {i}"))
        assert webhook({"submission": subs[(i + 1) % 2]}, d["number"],
                       updated=t1).status_code == 202
    for d in dossiers[:4]:
        wait_dossier(db, d["number"], lambda r: r["version"] == 2, what="the change stored")
    time.sleep(2.5)  # poller passes of either replica: nothing more may come of them
    for i, d in enumerate(dossiers):
        assert sql(db, "SELECT count(*) FROM submission.dossier WHERE ds_number = %s",
                   d["number"]) == [(1,)]
        row = dossier_row(db, d["number"])
        assert row["version"] == (2 if i < 4 else 1)
        expected = ["dossier.deposited"] + (["dossier.updated"] if i < 4 else [])
        assert [e[0] for e in outbox(db, row["id"])] == expected
        # one notice per version, whoever told first: a poller pass that saw the change on DS
        # before its webhook came records it, and the webhook is then the duplicate
        assert len([n for n in sql(db, "SELECT origin FROM submission.ds_notification"
                                       " WHERE dossier_number = %s", d["number"])]) == \
            (2 if i < 4 else 1)
    order = wait_applied(db, [r["id"] for r in rows])
    report("ds webhooks, 2 replicas", dossiers=len(dossiers),
           events=sum(len(v) for v in order.values()))


def test_partner_deposits_through_both_replicas(db, keys, both_alive):
    subs = both_alive["submission"]
    token = keys.create("partner")
    ids = []
    for i in range(10):
        r = requests.post(f"{subs[i % 2]}/v1/dossiers", json=valid_body(summary=f"replica {i}"),
                          headers={**bearer(token), "Idempotency-Key": str(uuid.uuid4())},
                          timeout=10)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    # One key sent to both replicas at once: one dossier, the other answer a replay.
    key, body = str(uuid.uuid4()), valid_body(summary="same key, two replicas")
    barrier = threading.Barrier(2)
    answers = [None, None]

    def send(k):
        barrier.wait(timeout=10)
        answers[k] = requests.post(f"{subs[k]}/v1/dossiers", json=body, timeout=10,
                                   headers={**bearer(token), "Idempotency-Key": key})
    threads = [threading.Thread(target=send, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    # The twin is answered at once: the creation's replay, or 409 while the first is in flight.
    codes = sorted(a.status_code for a in answers)
    assert codes in ([201, 201], [201, 409]), [a.text for a in answers]
    retry = requests.post(f"{subs[1]}/v1/dossiers", json=body, timeout=10,
                          headers={**bearer(token), "Idempotency-Key": key})
    assert retry.status_code == 201 and retry.headers.get("Idempotent-Replayed") == "true"
    answers = [a if a.status_code == 201 else retry for a in answers]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == ["", "true"]
    ids.append(answers[0].json()["id"])
    assert sql(db, "SELECT count(*) FROM submission.dossier WHERE id::text = ANY(%s)", ids) == \
        [(len(ids),)]
    order = wait_applied(db, ids)
    assert all(len(v) == 1 for v in order.values())


# ---- consumers of one group on two replicas ---------------------------------------------------


def refusal(eid, key, seq):
    """A dossier.decided of instruction's, a refusal: funding applies it (records it, grants
    nothing); a type funding does not apply would be skipped without a trace to count."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({
        "specversion": "1.0", "id": eid, "source": "/test/replicas", "type": "dossier.decided",
        "subject": key, "time": now, "datacontenttype": "application/json",
        "data": {"dossier_id": key, "phase": 1, "wave": "2026", "region": "84",
                 "outcome": "refused", "motivation": "test", "reference": f"R-{seq}",
                 "decided_at": now, "version": seq + 1}}, separators=(",", ":"))


def insert_instruction_events(db, run):
    """The events of run, as refusals, committed into instruction's outbox for funding."""
    for rows in run.batches():
        with db.transaction():
            sql(db, "INSERT INTO instruction.outbox (event_id, topic, key, type, payload)"
                    " SELECT e, %s, k, 'dossier.decided', p FROM unnest(%s::uuid[], %s::text[],"
                    " %s::text[]) WITH ORDINALITY AS u(e, k, p, n) ORDER BY n",
                INSTRUCTION_TOPIC, [r[0] for r in rows], [r[1] for r in rows],
                [refusal(r[0], r[1], r[4]) for r in rows])


def funding_drained(db, run):
    """Every event sent by instruction's relays and in funding's inbox once, in key order."""
    n = len(run.ids)
    if sql(db, "SELECT count(sent_at) FROM instruction.outbox WHERE event_id = ANY(%s::uuid[])",
           run.ids)[0][0] != n:
        return None
    inbox = sql(db, "SELECT event_id::text, key FROM funding.inbox WHERE event_id = ANY(%s::uuid[])"
                    " ORDER BY seq", run.ids)
    if len(inbox) < n:
        return None
    assert len({r[0] for r in inbox}) == n == len(inbox), "an event applied twice by funding"
    per_key = {}
    for eid, key in inbox:
        assert run.by_id[eid][0] == key
        per_key.setdefault(key, []).append(run.by_id[eid][1])
    assert all(v == list(range(run.per_key)) for v in per_key.values()), "out of order"
    return True


def applied_counts(urls_of):
    return [metric(u, "ptce_inbox_applied_total") for u in urls_of]


def wait_sharing(db, urls_of, publish, drained, what):
    """Publishes small runs until each replica of the group has applied some events: the
    group has rebalanced its partitions over both members."""
    before = applied_counts(urls_of)
    start = time.monotonic()
    while time.monotonic() < start + 60:
        run = Run("warm-up", nkeys=24, per_key=1)
        publish(db, run)
        wait_until(lambda: drained(db, run), timeout=30, what=f"{what} warm-up drained")
        if all(a > b for a, b in zip(applied_counts(urls_of), before)):
            return time.monotonic() - start
        time.sleep(1)
    pytest.fail(f"{what}: the partitions were never shared by both replicas "
                f"(applied before {before}, now {applied_counts(urls_of)})")


def test_instruction_replicas_share_the_stream_exactly_once(db, both_alive):
    inst = both_alive["instruction"]
    shared_after = wait_sharing(db, inst, insert_all,
                                lambda d, r: unsent(d, r) == 0 and
                                sql(d, "SELECT count(*) FROM instruction.inbox WHERE event_id ="
                                       " ANY(%s::uuid[])", r.ids)[0][0] == len(r.ids),
                                "instruction")
    before = applied_counts(inst)
    run = Run("two-instructions")
    insert_all(db, run)
    drained = wait_drained(db, run)
    check_exactly_once(db, run)
    delta = [a - b for a, b in zip(applied_counts(inst), before)]
    assert all(d > 0 for d in delta) and sum(delta) >= len(run.ids), delta
    report("2 instruction consumers", events=len(run.ids), applied_per_replica=delta,
           group_shared_after_s=round(shared_after, 1), drain_s=round(drained, 2))


def test_funding_replicas_share_the_stream_exactly_once(db, both_alive):
    fund = both_alive["funding"]
    shared_after = wait_sharing(db, fund, insert_instruction_events, funding_drained, "funding")
    before = applied_counts(fund)
    run = Run("two-fundings", nkeys=20, per_key=20)
    t0 = time.monotonic()
    insert_instruction_events(db, run)
    wait_until(lambda: funding_drained(db, run), timeout=60, what="funding to apply the run")
    delta = [a - b for a, b in zip(applied_counts(fund), before)]
    assert all(d > 0 for d in delta) and sum(delta) >= len(run.ids), delta
    report("2 funding consumers (2 instruction relays)", events=len(run.ids),
           applied_per_replica=delta, group_shared_after_s=round(shared_after, 1),
           drain_s=round(time.monotonic() - t0, 2))


# ---- the reconciliation poller: one replica at a time ---------------------------------------


def poller_holders(db):
    return [r[0] for r in sql(db, POLLER_HOLDER, DEMARCHE)]


def poll_queries(dsfake, since, until=None):
    """The poller's DS queries that arrived in [since, until): (pages of updated dossiers,
    deletions queries). A pass asks for deleted dossiers once (there are fewer than 100)."""
    log = [e for e in dsfake.stats()["graphql_log"]
           if e["at"] >= since and (until is None or e["at"] < until)]
    return (sum(e["operation"] == "getDemarcheDossiers" for e in log),
            sum(e["operation"] == "getDeletedDossiers" for e in log))


def test_poller_runs_on_one_replica_and_moves_when_killed(db, dsfake, stack, both_alive):
    holders = wait_until(lambda: poller_holders(db), timeout=2 * POLL_INTERVAL_S + 5,
                         what="a replica to hold the poller's lock")
    assert len(holders) == 1, holders
    window = 8.0
    t0 = time.time()
    time.sleep(window)
    pages, passes = poll_queries(dsfake, t0, time.time())
    # One poller: a pass, then a sleep of one interval. Two would make about twice as many.
    assert 3 <= passes <= window / POLL_INTERVAL_S + 1, \
        f"{passes} poller passes in {window} s with 2 replicas ({pages} pages of dossiers)"
    assert pages >= passes - 1  # the window may cut a pass between its two queries

    leader = replica_of(holders[0])
    os.kill(stack.replica_pid("submission", leader), signal.SIGKILL)
    killed = time.time()
    new = wait_until(lambda: [h for h in poller_holders(db) if h != holders[0]], timeout=10,
                     interval=0.05, what="the other replica to take the poller's lock")
    takeover_s = time.time() - killed
    assert replica_of(new[0]) == 1 - leader
    assert takeover_s <= POLL_INTERVAL_S + 3, takeover_s
    wait_until(lambda: poll_queries(dsfake, killed)[1] >= 2, timeout=10,
               what="poller passes by the new leader")
    # The killed replica comes back as a follower: the leadership stays where it is.
    stack.start_replica("submission", leader)
    time.sleep(2 * POLL_INTERVAL_S + 0.5)
    assert poller_holders(db) == new
    t1 = time.time()
    time.sleep(4)
    _, passes_after = poll_queries(dsfake, t1, time.time())
    assert passes_after <= 4 / POLL_INTERVAL_S + 1, passes_after
    report("poller, 2 replicas", passes_in_window=passes, window_s=window,
           pages_in_window=pages, takeover_after_sigkill_s=round(takeover_s, 2),
           passes_in_4s_after_restart=passes_after)


# ---- the outbox relay: the lock holder SIGKILLed mid-round ----------------------------------


def test_relay_leader_killed_leadership_moves(db, stack, admin_url, relay_hold, both_alive):
    subs = both_alive["submission"]
    published0 = [metric(u, "ptce_outbox_published_total") for u in subs]
    run = Run("replica-relay-kill")
    inserter = Inserter(admin_url, run, pause=0.05)
    inserter.start()
    wait_until(lambda: sent(db, run) >= 3 * BATCH, timeout=20, interval=0.01,
               what="the relays to publish part of the run")
    sql(relay_hold, "SELECT pg_advisory_lock(%s)", HOLD_LOCK)
    wait_until(lambda: published_unmarked(db, run) > 0, timeout=20, interval=0.02,
               what="a round published to Kafka but not yet marked sent")
    holders = sql(db, RELAY_HOLDER)
    assert len(holders) == 1, holders
    leader = replica_of(holders[0][0])
    survivor = 1 - leader
    victim = stack.replica_pid("submission", leader)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not stack.process_alive(victim), timeout=10, interval=0.02,
               what="the relay leader to die")
    killed = time.monotonic()
    sent_at_kill = sent(db, run)
    sql(relay_hold, "SELECT pg_advisory_unlock(%s)", HOLD_LOCK)  # the dead round rolls back
    wait_until(lambda: sent(db, run) > sent_at_kill, timeout=10, interval=0.02,
               what="the surviving replica to publish")
    takeover_s = time.monotonic() - killed
    inserter.finish()
    drained = wait_drained(db, run)
    check_exactly_once(db, run)
    by_survivor = metric(subs[survivor], "ptce_outbox_published_total") - published0[survivor]
    assert by_survivor > 0
    assert takeover_s < 10, takeover_s
    report("relay leader SIGKILL, 2 replicas", events=len(run.ids), killed_replica=leader,
           sent_at_kill=sent_at_kill, first_publish_after_kill_s=round(takeover_s, 2),
           published_by_survivor=by_survivor, drain_s=round(drained, 2))
