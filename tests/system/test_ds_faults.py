"""The DS fetch queue under a crash and a database error, and files over the download limit.

A fetch that dies half-way (the process killed, or its database connection cut) must be taken
again within seconds, by this process or another replica, not after a lease of 5 minutes.
Each case runs with a dossier announced by the poller alone (a lost webhook) and with one
announced by its webhook alone (a change older than the poller's window). A main document over PTCE_DS_MAX_FILE_BYTES (20 MiB under `make test`) is permanent:
the dossier is stored, marked too_large, and the file is not downloaded again.
"""
import base64
import datetime as dt
import json
import os
import signal
import time

import pytest

from conftest import sql, wait_until
from test_submission_ds import (DEMARCHE, MAIN_DOCUMENT_CHAMP, checks_of, deposit, dossier_row,
                                make_dossier, notices, now_paris, utc_text, wait_dossier, webhook)


def parse_ds_time(text):
    return dt.datetime.fromisoformat(text)

FILES = os.path.join(os.path.dirname(__file__), "..", "dsfake", "fixtures", "files")
MAX_FILE_BYTES = 20971520  # PTCE_DS_MAX_FILE_BYTES's default, which `make test` keeps
PATIENCE_S = 15  # "within seconds": the old lease made these dossiers wait 300 s
SLOW_MS = 2000  # under PTCE_DS_TIMEOUT_MS (3 s): the fetch is slow, not failed


def served(dsfake, mode):
    return dsfake.stats()["faults_served"].get(mode, 0)


def slow_fetch_started(dsfake, number):
    """Slows the next fetch of dossier `number` only; returns a probe of its start."""
    before = served(dsfake, "slow")
    dsfake.faults({"mode": "slow", "delay_ms": SLOW_MS, "count": 1, "dossier": number})
    return lambda: served(dsfake, "slow") > before


def worker_backends(db):
    """The submission backends whose last statement claimed a DS notice (a fetch in flight)."""
    return [r[0] for r in sql(db, "SELECT pid FROM pg_stat_activity WHERE usename = 'ptce_submission'"
                                  " AND query LIKE 'UPDATE ds_notification SET attempts%%'")]


def service_events(stack, event):
    """The submission log's lines of one event, as JSON objects."""
    with open(stack.log_path("submission"), encoding="utf-8", errors="replace") as f:
        return [json.loads(line) for line in f if f'"event":"{event}"' in line]


def announce(db, dsfake, urls, how):
    """Deposits a dossier whose next fetch is slow, announced by the poller alone (a lost
    webhook) or by its webhook alone (a change older than the poller's window); returns its
    number once that fetch is in flight."""
    if how == "poller":
        d = make_dossier(1001)
    else:
        # The poller looks back PTCE_DS_POLL_OVERLAP_S (600 s) from its watermark: a dossier
        # changed an hour before a recent watermark is the webhook's alone.
        wait_until(lambda: sql(db, "SELECT 1 FROM submission.ds_sync"
                                   " WHERE updated_watermark > now() - interval '5 minutes'"),
                   timeout=10, what="a recent poller watermark")
        d = make_dossier(1001, updated=now_paris() - dt.timedelta(hours=1))
    number = d["number"]
    started = slow_fetch_started(dsfake, number)
    deposit(dsfake, d)
    if how == "webhook":
        assert webhook(urls, number, d["state"], parse_ds_time(d["dateDerniereModification"])
                       ).status_code == 202
    wait_until(started, timeout=10, interval=0.05, what="the fetch of the dossier in flight")
    assert {n[0] for n in notices(db, number)} == {how}
    return number


@pytest.mark.parametrize("how", ["poller", "webhook"])
def test_kill_during_fetch_is_retried_within_seconds(db, dsfake, stack, urls, how):
    number = announce(db, dsfake, urls, how)
    victim = stack.pid("submission")
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    try:
        assert stack.wait_exit("submission", 10), "submission survived SIGKILL"
        assert dossier_row(db, number) is None
        assert [(n[0], n[1], n[2]) for n in notices(db, number)] == [(how, "pending", 1)]
    finally:
        stack.start_service("submission")
    assert stack.pid("submission") != victim
    row = wait_dossier(db, number, timeout=PATIENCE_S, what="the dossier after the restart")
    elapsed = time.monotonic() - killed
    assert elapsed < PATIENCE_S, f"stored {elapsed:.1f} s after the kill"
    assert row["eligibility"] == "eligible" and row["version"] == 1
    rows = wait_until(lambda: (lambda n: n if n and all(r[1] == "done" for r in n) else None)(
        notices(db, number)), timeout=10, what="the notice done")
    assert [r[0] for r in rows] == [how]


@pytest.mark.parametrize("how", ["poller", "webhook"])
def test_database_error_during_fetch_is_retried_within_seconds(db, dsfake, stack, urls, how):
    victim = stack.pid("submission")
    number = announce(db, dsfake, urls, how)
    pids = worker_backends(db)
    assert pids, "no submission backend is fetching"
    # The worker's connection dies under it, as in a PostgreSQL restart: its store then fails.
    assert all(sql(db, "SELECT pg_terminate_backend(%s)", pid) == [(True,)] for pid in pids)
    cut = time.monotonic()
    row = wait_dossier(db, number, timeout=PATIENCE_S, what="the dossier after the cut")
    elapsed = time.monotonic() - cut
    assert elapsed < PATIENCE_S, f"stored {elapsed:.1f} s after the connection was cut"
    assert row["eligibility"] == "eligible" and row["version"] == 1
    assert stack.pid("submission") == victim and stack.alive("submission")
    # The failed attempt is counted; the next one did the work.
    rows = wait_until(lambda: (lambda n: n if n and all(r[1] == "done" for r in n) else None)(
        notices(db, number)), timeout=10, what="the notice done")
    assert [r[0] for r in rows] == [how] and rows[0][2] >= 2
    # The cut attempt ends too: it sees its connection (and lock) gone as soon as DS answers, so
    # it neither downloads nor stores, and writes its retry on a new connection. Another worker
    # may have done the work meanwhile: the lock went with the connection.
    failed = wait_until(lambda: [e for e in service_events(stack, "ds.fetch_failed")
                                 if e.get("number") == number], timeout=10,
                        what="the cut attempt's failure")
    assert "connection lost during the fetch" in failed[0]["error"], failed
    assert failed[0]["retry_recorded"]


def test_poller_makes_a_waiting_notice_due(db, dsfake):
    updated = now_paris()
    d = make_dossier(1001, updated=updated)
    number = d["number"]
    # The notice the poller is about to queue, already pending but waiting 5 minutes (a lease
    # left by an older release, or a long backoff): meeting it again must not leave it there.
    sql(db, "INSERT INTO submission.ds_notification (procedure_id, dossier_number, state,"
            " updated_at_raw, updated_at, origin, next_attempt_at) VALUES (%s, %s, %s, %s, %s,"
            " 'poller', now() + interval '5 minutes')",
        DEMARCHE, number, d["state"], utc_text(updated), utc_text(updated))
    queued = time.monotonic()
    deposit(dsfake, d)
    wait_dossier(db, number, timeout=PATIENCE_S, what="the dossier the poller saw again")
    assert time.monotonic() - queued < PATIENCE_S
    assert [(n[0], n[4]) for n in notices(db, number)] == [("poller", utc_text(updated))]


# ---- files over the download limit ---------------------------------------------------------


def with_main_document(dossier, file_spec):
    champ = next(c for c in dossier["champs"] if c["champDescriptorId"] == MAIN_DOCUMENT_CHAMP)
    champ["files"] = [dict({"filename": "candidature.pdf", "contentType": "application/pdf"},
                           **file_spec)]
    return dossier


def assert_stored_too_large(db, stack, row):
    doc = row["document"]
    # (the service writes its log from a thread of its own: the line may follow the commit)
    wait_until(lambda: [e for e in service_events(stack, "ds.file_too_large")
                        if e.get("number") == doc["ds_number"]], timeout=5,
               what="the too large file logged with its dossier")
    assert doc["main_document"]["verification"] == "too_large", doc["main_document"]
    assert doc["main_document"]["pages"] is None
    check = checks_of(doc)["main_document.max_pages"]
    assert check["outcome"] == "needs_review", check
    assert check["evidence"]["verification"] == "too_large", check
    assert row["eligibility"] == "needs_review"
    assert sql(db, "SELECT count(*) FROM submission.attachment WHERE dossier_id = %s",
               row["id"]) == [(0,)]


def settled(db, number):
    time.sleep(2.5)  # two more poller passes, and any retry, had their chance
    rows = notices(db, number)
    assert rows and all(r[1] == "done" for r in rows), rows
    assert dossier_row(db, number)["version"] == 1


@pytest.fixture()
def downloads(dsfake):
    before = dsfake.stats()["file_downloads"]
    return lambda: dsfake.stats()["file_downloads"] - before


def test_file_declared_too_large_is_not_downloaded(db, dsfake, stack, downloads):
    with open(os.path.join(FILES, "ptce-4-pages.pdf"), "rb") as f:
        pdf = base64.b64encode(f.read()).decode()
    d = with_main_document(make_dossier(1001), {"contentBase64": pdf,
                                                "declaredByteSize": 3 * MAX_FILE_BYTES})
    number = deposit(dsfake, d)
    row = wait_dossier(db, number, timeout=20)
    assert_stored_too_large(db, stack, row)
    assert row["document"]["main_document"]["byte_size"] == 3 * MAX_FILE_BYTES
    settled(db, number)
    assert downloads() == 0, "DS said the file is too large: nothing to download"


def test_file_served_too_large_is_downloaded_once(db, dsfake, stack, downloads):
    # DS announces a small file; the storage serves more than the limit (Content-Length says so).
    d = with_main_document(make_dossier(1001), {"content": "%PDF-1.4 ", "size": MAX_FILE_BYTES + 4096,
                                                "declaredByteSize": 1654})
    number = deposit(dsfake, d)
    row = wait_dossier(db, number, timeout=20)
    assert_stored_too_large(db, stack, row)
    settled(db, number)
    assert downloads() == 1, "a file too large is permanent: one download attempt, not one per retry"
