"""The submission service against the DS fake: from DS's webhook to the dossier event.

Every test deposits dossiers of its own in the fake (copies of the fixtures under fresh
numbers), so that tests stay independent although the reconciliation poller (every second
under `make test`) sees every dossier of the démarche. Assertions are on end states: what
submission stored, what its outbox published, what instruction projected.
"""
import copy
import datetime as dt
import itertools
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import psycopg
import pytest
import requests

from conftest import ROOT, bearer, partner_body, sql, wait_until

WEBHOOK_TOKEN = os.environ.get("PTCE_DS_WEBHOOK_TOKEN", "test-webhook-secret")
DEMARCHE = 12345
FIXTURES = os.path.join(ROOT, "tests", "dsfake", "fixtures", "dossiers")
PARIS = ZoneInfo("Europe/Paris")
BODY_LIMIT = 65536
MAIN_DOCUMENT_CHAMP = "Q2hhbXAtMTEw"  # champDescriptorId of the main document (ds_mapping.json)
SUMMARY_CHAMP = "Q2hhbXAtMTA5"
RULES = ["carrier.private_legal_person", "carrier.siret", "members.at_least_three",
         "members.required_kinds", "members.siret_format", "territory.defined",
         "territory.region_code", "no_prior_state_support", "main_document.max_pages"]

# Fresh DS numbers for this session: far from the fixtures (1001-1004) and from other test
# files, and different from one run to the next against the same stack.
_numbers = itertools.count(10_000_000 + (int(time.time()) % 1_000_000) * 100)
_numbers_lock = threading.Lock()


def fresh_number():
    with _numbers_lock:
        return next(_numbers)


def now_paris():
    return dt.datetime.now(PARIS).replace(microsecond=0)


def ds_time(moment):
    """DS's ISO 8601 form: Paris offset, whole seconds."""
    return moment.astimezone(PARIS).isoformat(timespec="seconds")


def webhook_time(moment):
    """The legacy webhook's form: "2021-06-23 10:32:42 +0200"."""
    return moment.astimezone(PARIS).strftime("%Y-%m-%d %H:%M:%S %z")


def utc_text(moment):
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _champ(dossier, typename):
    return next(c for c in dossier["champs"] if c["__typename"] == typename)


def make_dossier(template=1001, *, number=None, state=None, updated=None, deposited=None,
                 region=None, siret=None, summary=None):
    """A copy of a fixture dossier under a fresh number, modified now (or at `updated`)."""
    with open(os.path.join(FIXTURES, f"{template}.json"), encoding="utf-8") as f:
        d = json.load(f)
    for key in ("_comment", "id", "usager"):  # the fake derives them from the number
        d.pop(key, None)
    d["number"] = number or fresh_number()
    updated = updated or now_paris()
    deposited = deposited or updated
    d["dateDepot"] = d["datePassageEnConstruction"] = ds_time(deposited)
    d["dateDerniereModification"] = d["dateDerniereModificationChamps"] = ds_time(updated)
    d["dateDerniereModificationAnnotations"] = ds_time(updated)
    if state:
        d["state"] = state
        d["datePassageEnInstruction"] = ds_time(updated) if state != "en_construction" else None
    if region:
        _champ(d, "RegionChamp")["region"]["code"] = region
    if siret:
        _champ(d, "SiretChamp")["stringValue"] = siret
    if summary:
        champ = next(c for c in d["champs"] if c["champDescriptorId"] == SUMMARY_CHAMP)
        champ["value"] = champ["stringValue"] = summary
    for champ in d["champs"]:
        champ["updatedAt"] = ds_time(updated)
    return d


def changed(dossier, *, updated=None, **changes):
    """The same DS dossier, modified later (at `updated`, default now)."""
    d = copy.deepcopy(dossier)
    updated = updated or now_paris()
    d["dateDerniereModification"] = d["dateDerniereModificationChamps"] = ds_time(updated)
    d["dateDerniereModificationAnnotations"] = ds_time(updated)
    for key, value in changes.items():
        if key == "summary":
            champ = next(c for c in d["champs"] if c["champDescriptorId"] == SUMMARY_CHAMP)
            champ["value"] = champ["stringValue"] = value
        else:
            d[key] = value
    return d


def webhook(urls, number, state="en_construction", updated=None, *, token=WEBHOOK_TOKEN,
            procedure_id=DEMARCHE, **kwargs):
    """What DS's legacy webhook sends: a form-encoded POST with four fields."""
    data = {"procedure_id": str(procedure_id), "dossier_id": str(number), "state": state,
            "updated_at": webhook_time(updated or now_paris())}
    return requests.post(f"{urls['submission']}/v1/webhooks/ds/{token}", data=data, timeout=10,
                         **kwargs)


def dossier_row(db, number):
    rows = sql(db, "SELECT id::text, state, eligibility, version, region, document,"
                   " ds_updated_at FROM submission.dossier WHERE ds_number = %s", number)
    if not rows:
        return None
    keys = ("id", "state", "eligibility", "version", "region", "document", "ds_updated_at")
    return dict(zip(keys, rows[0]))


def wait_dossier(db, number, predicate=lambda row: True, timeout=20.0, what=None):
    def probe():
        row = dossier_row(db, number)
        return row if row and predicate(row) else None
    return wait_until(probe, timeout=timeout, what=what or f"DS dossier {number} in submission.dossier")


def outbox(db, dossier_id):
    return sql(db, "SELECT type, sent_at, payload FROM submission.outbox WHERE key = %s ORDER BY id",
               dossier_id)


def notices(db, number):
    return sql(db, "SELECT origin, status, attempts, last_error, updated_at_raw"
                   " FROM submission.ds_notification WHERE dossier_number = %s ORDER BY id", number)


def checks_of(document):
    return {c["rule"]: c for c in document["checks"]}


def deposit(dsfake, dossier):
    dsfake.post("/_control/dossiers", dossier)
    return dossier["number"]


def all_notices_done(db, number):
    rows = notices(db, number)
    return rows if rows and all(r[1] == "done" for r in rows) else None


def list_all(urls, token, **params):
    """Every item of GET /v1/dossiers with these filters, following next_cursor."""
    items, cursor = [], None
    for _ in range(1000):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        r = requests.get(f"{urls['submission']}/v1/dossiers", params=query, headers=bearer(token),
                         timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    pytest.fail("next_cursor never ended")


@pytest.fixture(scope="module")
def admin_key(keys):
    return keys.create("national_admin")


# ---- happy path ------------------------------------------------------------------------


def test_webhook_to_event_happy_path(urls, db, dsfake, admin_key):
    d = make_dossier(1001)
    number = deposit(dsfake, d)
    r = webhook(urls, number, "en_construction", now_paris())
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "accepted"
    # The notification is stored before the answer: nothing acknowledged can be lost. (The
    # poller may have met the same instant first: then the webhook was its duplicate.)
    assert notices(db, number)
    assert r.json()["duplicate"] or any(n[0] == "webhook" for n in notices(db, number))

    row = wait_dossier(db, number)
    doc = row["document"]
    assert row["state"] == "en_construction" and row["version"] == 1
    assert row["eligibility"] == "eligible", doc["checks"]
    assert row["region"] == "84"
    assert doc["ds_number"] == number and doc["origin"] == "ds"
    # The wave whose deposit window is open now (2026 unless a test opened a later one).
    assert [(doc["wave"],)] == sql(db, "SELECT id FROM submission.wave WHERE deposit_opens_at <= now()"
                                       " AND (deposit_closes_at IS NULL OR deposit_closes_at > now())"
                                       " ORDER BY deposit_opens_at DESC LIMIT 1")
    assert doc["carrier"]["siret"] == "73282932000074"
    assert len(doc["members"]) == 3
    assert [c["rule"] for c in doc["checks"]] == RULES
    assert all(c["outcome"] == "pass" for c in doc["checks"]), doc["checks"]
    main = doc["main_document"]
    assert main["verification"] == "verified" and main["pages"] == 4
    assert "url" not in main  # signed URLs expire: never stored nor served
    # The checks are recorded rule by rule, and the verified file is kept.
    stored_checks = sql(db, "SELECT rule, outcome FROM submission.dossier_check"
                            " WHERE dossier_id = %s AND version = 1", row["id"])
    assert sorted(stored_checks) == sorted((rule, "pass") for rule in RULES)
    # ... from one row per version, in the order the rules ran, as the document shows them.
    [(stored_set,)] = sql(db, "SELECT checks FROM submission.dossier_check_set"
                              " WHERE dossier_id = %s AND version = 1", row["id"])
    assert stored_set == doc["checks"]
    # (the control API's view leaves out keys starting with "_", __typename included)
    fake_file = next(c for c in dsfake.get(f"/_control/dossiers/{number}")["champs"]
                     if c["champDescriptorId"] == MAIN_DOCUMENT_CHAMP)["files"][0]
    attachment = sql(db, "SELECT byte_size, checksum, pages, length(content)"
                         " FROM submission.attachment WHERE dossier_id = %s", row["id"])
    assert attachment == [(fake_file["byteSize"], fake_file["checksum"], 4, fake_file["byteSize"])]

    # One event, published (sent_at set only on the broker's acknowledgement)...
    events = wait_until(lambda: [e for e in outbox(db, row["id"]) if e[1] is not None] or None,
                        timeout=20, what="the dossier.deposited event sent")
    assert [e[0] for e in outbox(db, row["id"])] == ["dossier.deposited"]
    envelope = json.loads(events[0][2])
    assert envelope["specversion"] == "1.0" and envelope["type"] == "dossier.deposited"
    assert envelope["subject"] == row["id"]
    assert envelope["data"]["dossier"]["ds_number"] == number
    # ...and consumed: instruction's projection holds the dossier.
    projected = wait_until(lambda: sql(db, "SELECT source_state, region, wave, snapshot"
                                           " FROM instruction.dossier WHERE id = %s", row["id"]),
                           timeout=20, what="instruction's projection of the dossier")
    state, region, wave, snapshot = projected[0]
    assert (state, region, wave) == ("en_construction", "84", doc["wave"])
    assert snapshot["eligibility"] == "eligible" and snapshot["ds_number"] == number

    wait_until(lambda: all_notices_done(db, number), timeout=10, what="notifications done")

    # The API serves it to a national administrator, and to nobody without a key.
    url = f"{urls['submission']}/v1/dossiers/{row['id']}"
    r = requests.get(url, headers=bearer(admin_key), timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == row["id"] and body["ds_number"] == number
    assert body["eligibility"] == "eligible" and body["state"] == "en_construction"
    assert "url" not in body["main_document"]
    r = requests.get(url, timeout=10)
    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith("application/problem+json")


def test_same_webhook_twenty_times_in_parallel(urls, db, dsfake):
    d = make_dossier(1001)
    number = deposit(dsfake, d)
    # An instant the reconciliation poller never reports (it reports the dossier's last
    # modification): had it met this notice first, all twenty would rightly be duplicates
    # (CI saw it once).
    when = now_paris() - dt.timedelta(days=3)
    barrier = threading.Barrier(20)

    def send(_):
        barrier.wait(timeout=10)
        return webhook(urls, number, "en_construction", when)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(send, range(20)))
    assert [a.status_code for a in answers] == [202] * 20, [a.text for a in answers]
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 19
    assert len([n for n in notices(db, number) if n[0] == "webhook"]) == 1

    row = wait_dossier(db, number)
    wait_until(lambda: all_notices_done(db, number), timeout=15, what="notifications done")
    time.sleep(2.5)  # two more poller passes: nothing more may come of them
    assert sql(db, "SELECT count(*) FROM submission.dossier WHERE ds_number = %s", number) == [(1,)]
    assert dossier_row(db, number)["version"] == 1
    assert [e[0] for e in outbox(db, row["id"])] == ["dossier.deposited"]


def test_webhooks_out_of_order_keep_ds_current_state(urls, db, dsfake):
    t0 = now_paris() - dt.timedelta(seconds=120)
    d = make_dossier(1001, updated=t0)
    number = deposit(dsfake, d)
    assert webhook(urls, number, "en_construction", t0).status_code == 202
    first = wait_dossier(db, number)
    assert first["version"] == 1 and first["state"] == "en_construction"

    # DS changes the dossier twice (t1, then t2); its webhooks arrive in the reverse order.
    t1, t2 = now_paris() - dt.timedelta(seconds=60), now_paris()
    deposit(dsfake, changed(d, updated=t2, state="en_instruction",
                            datePassageEnInstruction=ds_time(t2)))
    assert webhook(urls, number, "en_instruction", t2).status_code == 202
    assert webhook(urls, number, "en_construction", t1).status_code == 202

    row = wait_dossier(db, number, lambda r: r["state"] == "en_instruction")
    wait_until(lambda: all_notices_done(db, number), timeout=15, what="notifications done")
    time.sleep(2.5)  # the stale notification and the poller had their chance
    row = dossier_row(db, number)
    assert row["state"] == "en_instruction"
    assert row["version"] == 2, "one version per change DS made, no more"
    assert row["document"]["ds_updated_at"] == utc_text(t2)
    assert [e[0] for e in outbox(db, row["id"])] == ["dossier.deposited", "dossier.updated"]
    projected = wait_until(lambda: sql(db, "SELECT source_state FROM instruction.dossier"
                                           " WHERE id = %s AND source_state = 'en_instruction'",
                                       row["id"]), timeout=20, what="the update projected")
    assert projected == [("en_instruction",)]


def test_history_lists_versions(urls, db, dsfake, admin_key):
    t0 = now_paris() - dt.timedelta(seconds=30)
    d = make_dossier(1001, updated=t0)
    number = deposit(dsfake, d)
    webhook(urls, number, "en_construction", t0)
    row = wait_dossier(db, number)
    deposit(dsfake, changed(d, summary="Un résumé revu par le porteur."))
    webhook(urls, number, "en_construction", now_paris())
    row = wait_dossier(db, number, lambda r: r["version"] == 2)
    assert row["document"]["summary"] == "Un résumé revu par le porteur."

    r = requests.get(f"{urls['submission']}/v1/dossiers/{row['id']}/history",
                     headers=bearer(admin_key), timeout=10)
    assert r.status_code == 200, r.text
    history = r.json()
    assert [h["kind"] for h in history] == ["ds.deposited", "ds.updated"]
    assert [h["detail"]["version"] for h in history] == [1, 2]
    assert all(h["actor"] == "ds" and h["at"] for h in history)
    assert sql(db, "SELECT DISTINCT version FROM submission.dossier_check WHERE dossier_id = %s"
                   " ORDER BY version", row["id"]) == [(1,), (2,)]
    r = requests.get(f"{urls['submission']}/v1/dossiers/00000000-0000-4000-8000-000000000000/history",
                     headers=bearer(admin_key), timeout=10)
    assert r.status_code == 404


# ---- the reconciliation poller ------------------------------------------------------------


def test_lost_webhook_caught_by_poller(db, dsfake):
    number = deposit(dsfake, make_dossier(1001))  # and no webhook at all
    row = wait_dossier(db, number, timeout=10, what="the poller to find the dossier")
    assert row["eligibility"] == "eligible"
    rows = wait_until(lambda: all_notices_done(db, number), timeout=10, what="notifications done")
    assert {r[0] for r in rows} == {"poller"}
    wait_until(lambda: [e for e in outbox(db, row["id"]) if e[1] is not None], timeout=20,
               what="the dossier.deposited event sent")
    assert [e[0] for e in outbox(db, row["id"])] == ["dossier.deposited"]


def test_ds_deletion_withdraws_the_dossier(db, dsfake):
    number = deposit(dsfake, make_dossier(1001))
    row = wait_dossier(db, number)
    wait_until(lambda: all_notices_done(db, number), timeout=10, what="notifications done")
    dsfake.delete(f"/_control/dossiers/{number}", {"reason": "user_request"})

    withdrawn = wait_dossier(db, number, lambda r: r["state"] == "withdrawn", timeout=15,
                             what="the poller to withdraw the deleted dossier")
    assert withdrawn["version"] == row["version"] + 1
    assert withdrawn["document"]["state"] == "withdrawn"
    assert sql(db, "SELECT withdrawn_at IS NOT NULL FROM submission.dossier WHERE id = %s",
               row["id"]) == [(True,)]
    history = sql(db, "SELECT kind, detail->>'reason' FROM submission.dossier_history"
                      " WHERE dossier_id = %s ORDER BY id", row["id"])
    assert history[-1] == ("ds.deleted", "user_request")
    events = wait_until(lambda: [e for e in outbox(db, row["id"])
                                 if e[0] == "dossier.withdrawn" and e[1] is not None],
                        timeout=20, what="the dossier.withdrawn event sent")
    assert len(events) == 1
    assert json.loads(events[0][2])["data"]["reason"] == "user_request"
    wait_until(lambda: sql(db, "SELECT 1 FROM instruction.dossier WHERE id = %s"
                               " AND source_state = 'withdrawn'", row["id"]),
               timeout=20, what="instruction to see the withdrawal")
    time.sleep(2)  # later poller passes see the same deletion again: still one event
    assert [e[0] for e in outbox(db, row["id"])] == ["dossier.deposited", "dossier.withdrawn"]


# ---- DS failures -----------------------------------------------------------------------


@pytest.mark.parametrize("fault", [
    {"mode": "500"},
    {"mode": "down"},
    {"mode": "500", "status": 503, "count": 6},
    {"mode": "slow", "delay_ms": 3500, "count": 2},  # beyond PTCE_DS_TIMEOUT_MS (3 s)
], ids=["500-until-back", "down-until-back", "503-six-times", "slow-beyond-timeout"])
def test_ds_down_then_back_loses_nothing(urls, db, dsfake, fault):
    started = time.time()
    served_before = dsfake.stats()["faults_served"].get(fault["mode"], 0)
    number = deposit(dsfake, make_dossier(1001))
    dsfake.faults(fault)
    assert webhook(urls, number).status_code == 202  # accepted while DS is down
    if "count" not in fault:
        # The worker tried and failed; the notification waits, with its error.
        failed = wait_until(lambda: [n for n in notices(db, number)
                                     if n[1] == "pending" and n[2] >= 1 and n[3]],
                            timeout=10, what="a failed fetch attempt recorded")
        assert failed
        time.sleep(1.5)
        assert dossier_row(db, number) is None
        dsfake.clear_faults()
    row = wait_dossier(db, number, timeout=20, what="the dossier once DS is back")
    assert row["eligibility"] == "eligible"
    assert row["document"]["main_document"]["verification"] == "verified"
    rows = wait_until(lambda: all_notices_done(db, number), timeout=10, what="notifications done")
    assert all(r[3] is None for r in rows)  # done clears the error
    assert dsfake.stats()["faults_served"].get(fault["mode"], 0) > served_before
    assert [e[0] for e in outbox(db, row["id"])] == ["dossier.deposited"]
    if fault["mode"] == "slow":
        # Let the requests the fake still holds finish: they would meet the next test's faults.
        wait_until(lambda: all("status" in e for e in dsfake.stats()["graphql_log"]
                               if e["at"] >= started), timeout=10, what="slow requests answered")


def test_429_storm_respects_ratelimit_reset(urls, db, dsfake):
    started = time.time()
    # The storm first, then the dossier: every fetch of it meets the storm.
    dsfake.faults({"mode": "429", "count": 3, "reset_in": 2})
    number = deposit(dsfake, make_dossier(1001))
    assert webhook(urls, number).status_code == 202
    wait_dossier(db, number, timeout=30, what="the dossier after the 429 storm")

    def graphql_log():
        # A 429 answered now may have arrived before (e.g. a request the fake held back).
        return [e for e in dsfake.stats()["graphql_log"]
                if e["at"] >= started or e.get("rate_limit_reset", 0) > started]

    log = graphql_log()
    limited = [e for e in log if e.get("status") == 429]
    assert len(limited) == 3, limited
    last_reset = max(e["rate_limit_reset"] for e in limited)
    # DS serves again after the reset: the client comes back (the poller at the latest).
    log = wait_until(lambda: (lambda entries: entries if any(
        e["at"] >= last_reset and e.get("status") == 200 for e in entries) else None)(graphql_log()),
        timeout=10, what="a GraphQL request answered after RateLimit-Reset")
    # Requests already in flight when a 429 came back may arrive just after it; anything
    # sent later must wait for RateLimit-Reset (epoch seconds).
    in_flight = 0.25
    for hit in limited:
        early = [e for e in log if hit["at"] + in_flight < e["at"] < hit["rate_limit_reset"]]
        assert not early, f"requests sent before RateLimit-Reset {hit['rate_limit_reset']}: {early}"


def test_bad_checksum_is_stored_for_review(urls, db, dsfake):
    served_before = dsfake.stats()["faults_served"].get("bad_checksum", 0)
    dsfake.faults({"mode": "bad_checksum"})  # every download corrupt, until cleared
    number = deposit(dsfake, make_dossier(1001))
    assert webhook(urls, number).status_code == 202
    try:
        row = wait_dossier(db, number, timeout=20)
    finally:
        dsfake.clear_faults()
    doc = row["document"]
    assert doc["main_document"]["verification"] == "checksum_mismatch"
    assert doc["main_document"]["pages"] is None
    checks = checks_of(doc)
    assert checks["main_document.max_pages"]["outcome"] == "needs_review"
    assert row["eligibility"] == "needs_review"
    assert sql(db, "SELECT count(*) FROM submission.attachment WHERE dossier_id = %s",
               row["id"]) == [(0,)]
    # three downloads before giving up: a corrupt transfer is not a corrupt file
    assert dsfake.stats()["faults_served"].get("bad_checksum", 0) >= served_before + 3


def test_expired_file_urls_are_refetched(urls, db, dsfake):
    denied_before = dsfake.stats()["file_downloads_denied"]
    dsfake.faults({"mode": "expire_urls"})  # every URL handed out has expired, until cleared
    number = deposit(dsfake, make_dossier(1001))
    assert webhook(urls, number).status_code == 202
    wait_until(lambda: dsfake.stats()["file_downloads_denied"] >= denied_before + 2, timeout=10,
               what="downloads refused on expired URLs")
    assert dossier_row(db, number) is None  # not stored without its document
    dsfake.clear_faults()
    row = wait_dossier(db, number, timeout=20, what="the dossier once URLs are fresh")
    main = row["document"]["main_document"]
    assert main["verification"] == "verified" and main["pages"] == 4
    assert row["eligibility"] == "eligible"
    assert sql(db, "SELECT pages FROM submission.attachment WHERE dossier_id = %s",
               row["id"]) == [(4,)]


# ---- eligibility rules on DS dossiers -------------------------------------------------------


@pytest.mark.parametrize("template,rule,evidence,failing", [
    (1003, "main_document.max_pages", {"pages": 11, "max": 10}, ["main_document.max_pages"]),
    (1004, "carrier.siret", {"siret": "73282932000075"}, ["carrier.siret"]),
    # Two members (an ESS and another enterprise): too few, and no article-9 actor.
    (1002, "members.at_least_three", {"members": 2},
     ["members.at_least_three", "members.required_kinds"]),
], ids=["11-page-pdf", "invalid-siret", "two-members"])
def test_ineligible_dossiers(urls, db, dsfake, template, rule, evidence, failing):
    number = deposit(dsfake, make_dossier(template))
    assert webhook(urls, number).status_code == 202
    row = wait_dossier(db, number)
    checks = checks_of(row["document"])
    assert checks[rule]["outcome"] == "fail", checks[rule]
    assert evidence.items() <= checks[rule]["evidence"].items(), checks[rule]
    assert row["eligibility"] == "ineligible"
    assert sorted(r for r, c in checks.items() if c["outcome"] != "pass") == failing, \
        "only the rules the fixture breaks fail"
    assert sql(db, "SELECT outcome FROM submission.dossier_check WHERE dossier_id = %s"
                   " AND rule = %s", row["id"], rule) == [("fail",)]


# ---- malformed webhooks --------------------------------------------------------------------


def _form(number, **changes):
    form = {"procedure_id": str(DEMARCHE), "dossier_id": str(number), "state": "en_construction",
            "updated_at": "2021-06-23 10:32:42 +0200"}
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


@pytest.mark.parametrize("case", [
    "missing_dossier_id", "missing_procedure_id", "missing_state", "missing_updated_at",
    "non_numeric_dossier_id", "negative_dossier_id", "huge_dossier_id", "unknown_state",
    "bad_updated_at", "impossible_date", "empty_body", "oversized_body", "unknown_token",
    "json_body", "other_demarche",
])
def test_malformed_webhook_is_refused_and_nothing_stored(urls, db, case):
    number = fresh_number()  # no DS dossier has it: only this request could store it
    token, headers, status, field = WEBHOOK_TOKEN, {}, 400, None
    body = None
    if case.startswith("missing_"):
        field = case[len("missing_"):]
        form = _form(number, **{field: None})
    elif case == "non_numeric_dossier_id":
        field, form = "dossier_id", _form(number, dossier_id=f"{number}abc")
    elif case == "negative_dossier_id":
        field, form = "dossier_id", _form(number, dossier_id=f"-{number}")
    elif case == "huge_dossier_id":
        field, form = "dossier_id", _form(number, dossier_id="9" * 40)
    elif case == "unknown_state":
        field, form = "state", _form(number, state="brouillon")
    elif case == "bad_updated_at":
        field, form = "updated_at", _form(number, updated_at="yesterday at noon")
    elif case == "impossible_date":
        field, form = "updated_at", _form(number, updated_at="2021-13-45 10:32:42 +0200")
    elif case == "empty_body":
        field, form = "dossier_id", {}
    elif case == "oversized_body":
        status, form = 413, _form(number, padding="x" * (BODY_LIMIT + 1))
    elif case == "unknown_token":
        status, token, form = 404, "not-the-secret", _form(number)
    elif case == "other_demarche":  # a webhook of another procedure is not ours to import
        status, form = 422, _form(number, procedure_id=str(DEMARCHE + 1))
    else:  # the right fields, as JSON: the webhook is form-encoded
        status, form = 415, None
        body, headers = json.dumps(_form(number)), {"Content-Type": "application/json"}
    r = requests.post(f"{urls['submission']}/v1/webhooks/ds/{token}", data=body if form is None else form,
                      headers=headers, timeout=10)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status and problem["title"]
    if field:
        assert field in [e["field"] for e in problem.get("errors", [])], problem
    time.sleep(0.2)
    assert notices(db, number) == []
    assert dossier_row(db, number) is None


# ---- reading the dossiers ------------------------------------------------------------------


def test_regional_scope(urls, db, dsfake, keys, admin_key):
    number = deposit(dsfake, make_dossier(1001, region="84"))
    webhook(urls, number)
    row = wait_dossier(db, number)
    assert row["region"] == "84"
    key11 = keys.create("regional_instructor", "11")
    key84 = keys.create("regional_instructor", "84")
    url = f"{urls['submission']}/v1/dossiers/{row['id']}"

    r = requests.get(url, headers=bearer(key11), timeout=10)
    assert r.status_code == 404, "out of scope looks exactly like absent"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert requests.get(url + "/history", headers=bearer(key11), timeout=10).status_code == 404
    r = requests.get(url, headers=bearer(key84), timeout=10)
    assert r.status_code == 200 and r.json()["id"] == row["id"]
    assert requests.get(url + "/history", headers=bearer(key84), timeout=10).status_code == 200

    seen11 = list_all(urls, key11, limit=200)
    assert row["id"] not in {i["id"] for i in seen11}
    assert all(i["region"] == "11" for i in seen11)
    # Asking for another region's dossiers by filter does not widen the scope.
    assert list_all(urls, key11, region="84") == []
    assert row["id"] in {i["id"] for i in list_all(urls, key84, limit=200)}
    assert row["id"] in {i["id"] for i in list_all(urls, admin_key, limit=200)}


def test_list_filters_and_keyset_pagination(urls, db, dsfake, admin_key):
    region = "94"  # Corse: no other test deposits there
    eligible = [make_dossier(1001, region=region) for _ in range(2)]
    ineligible = make_dossier(1004, region=region)
    for d in eligible + [ineligible]:
        deposit(dsfake, d)
        webhook(urls, d["number"])
    rows = [wait_dossier(db, d["number"]) for d in eligible + [ineligible]]
    for d in eligible + [ineligible]:
        wait_until(lambda: all_notices_done(db, d["number"]), timeout=10, what="notifications done")
    ids = [r["id"] for r in rows]

    everything = list_all(urls, admin_key, region=region, limit=200)
    assert set(ids) <= {i["id"] for i in everything}
    assert all(i["region"] == region for i in everything)

    good = list_all(urls, admin_key, region=region, eligibility="eligible")
    assert {i["id"] for i in good} >= set(ids[:2]) and ids[2] not in {i["id"] for i in good}
    assert all(i["eligibility"] == "eligible" for i in good)
    bad = list_all(urls, admin_key, region=region, eligibility="ineligible")
    assert ids[2] in {i["id"] for i in bad} and not set(ids[:2]) & {i["id"] for i in bad}

    # limit=1 walks every dossier once, in the same order as one large page.
    walked, cursor, pages = [], None, 0
    while True:
        params = {"region": region, "limit": 1, **({"cursor": cursor} if cursor else {})}
        r = requests.get(f"{urls['submission']}/v1/dossiers", params=params,
                         headers=bearer(admin_key), timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 1
        walked += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 500
    assert walked == [i["id"] for i in everything], sql(
        db, "SELECT change_xid::text, id, updated_at, pg_snapshot_xmin(pg_current_snapshot())::text,"
            " (SELECT json_agg(json_build_object('pid', pid, 'xid', backend_xid::text, 'q', query,"
            " 'state', state)) FROM pg_stat_activity WHERE backend_xid IS NOT NULL)"
            " FROM submission.dossier WHERE region = %s ORDER BY 1, 2", region)
    assert len(walked) == len(set(walked)) >= 3

    for bad_query in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"cursor": "abc"},
                      {"region": "05"}, {"eligibility": "maybe"}, {"state": "lost"}):
        r = requests.get(f"{urls['submission']}/v1/dossiers", params=bad_query,
                         headers=bearer(admin_key), timeout=10)
        assert r.status_code == 400, (bad_query, r.text)
        assert r.headers["Content-Type"].startswith("application/problem+json")


# ---- waves ---------------------------------------------------------------------------------


def test_waves_list_and_create(urls, keys, admin_key):
    base = f"{urls['submission']}/v1/waves"
    r = requests.get(base, headers=bearer(admin_key), timeout=10)
    assert r.status_code == 200, r.text
    waves = {w["id"]: w for w in r.json()}
    assert "2026" in waves
    assert waves["2026"]["phase2_slots"] == 20
    assert waves["2026"]["amount_per_laureate_cents"] == 10_000_000

    # A past, closed wave: it must not capture the dossiers other tests deposit now.
    wave_id = f"t{int(time.time() * 1000) % 10**12}"
    wave = {"id": wave_id, "label": "Vague de test", "deposit_opens_at": "2019-01-01T00:00:00Z",
            "deposit_closes_at": "2019-12-31T00:00:00Z", "phase2_opens_at": None,
            "phase2_closes_at": None, "phase2_slots": 15, "amount_per_laureate_cents": 10_000_000}
    r = requests.post(base, json=wave, headers=bearer(admin_key), timeout=10)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"] == wave_id and created["phase2_slots"] == 15
    assert created["rules_version"]
    r = requests.get(base, headers=bearer(admin_key), timeout=10)
    assert wave_id in {w["id"] for w in r.json()}

    r = requests.post(base, json=wave, headers=bearer(admin_key), timeout=10)
    assert r.status_code == 409, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")

    for bad, field in ((dict(wave, id="bad id!"), "id"), (dict(wave, label=""), "label"),
                       (dict(wave, phase2_slots=-1), "phase2_slots"),
                       (dict(wave, amount_per_laureate_cents=1.5), "amount_per_laureate_cents"),
                       ({k: v for k, v in wave.items() if k != "deposit_opens_at"}, "deposit_opens_at"),
                       (dict(wave, deposit_opens_at="soon"), "deposit_opens_at")):
        bad = dict(bad, id=bad["id"] if field == "id" else wave_id + "b")
        r = requests.post(base, json=bad, headers=bearer(admin_key), timeout=10)
        assert r.status_code == 400, (field, r.text)
        assert field in [e["field"] for e in r.json().get("errors", [])], r.text
    r = requests.post(base, json=dict(wave, id=wave_id + "b", deposit_closes_at="2018-12-31T00:00:00Z"),
                      headers=bearer(admin_key), timeout=10)
    assert r.status_code == 400, "a deposit window that closes before it opens: " + r.text
    r = requests.post(base, data="{not json", headers={**bearer(admin_key),
                                                       "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400
    r = requests.get(base, headers=bearer(admin_key), timeout=10)
    assert wave_id + "b" not in {w["id"] for w in r.json()}

    # Only a national administrator creates waves; readers and partners may list them.
    regional = keys.create("regional_instructor", "84")
    r = requests.post(base, json=dict(wave, id=wave_id + "c"), headers=bearer(regional), timeout=10)
    assert r.status_code == 403, r.text
    assert requests.get(base, headers=bearer(keys.create("partner")), timeout=10).status_code == 200
    assert requests.get(base, timeout=10).status_code == 401


@pytest.mark.parametrize("bad", [
    [{"rule": "carrier.siret", "outcome": "pass", "evidence": {}}, 1],  # not a check
    [{"rule": "carrier.siret", "outcome": "maybe", "evidence": {}}],  # no such outcome
    [{"rule": "carrier.siret", "outcome": "pass"}],  # no evidence
    [{"outcome": "pass", "evidence": {}}],  # no rule
    [{"rule": 7, "outcome": "pass", "evidence": {}}],  # a rule not named
    {"carrier.siret": "pass"},  # not a list
])
def test_a_check_set_out_of_the_rules_shape_is_refused(db, urls, keys, bad):
    """The constraint of dossier_check_set keeps what the columns and the outcome's check kept
    when each rule had its row: a named rule, a known outcome, its evidence."""
    r = requests.post(f"{urls['submission']}/v1/dossiers", json=partner_body(),
                      headers={**bearer(keys.create("partner", regions="84")),
                               "Idempotency-Key": str(uuid.uuid4())}, timeout=10)
    assert r.status_code == 201, r.text
    dossier_id = r.json()["id"]
    # the deposit's own set has the shape (the constraint does not refuse everything)
    assert sql(db, "SELECT count(*) FROM submission.dossier_check_set WHERE dossier_id = %s"
                   " AND version = 1", dossier_id) == [(1,)]
    with pytest.raises(psycopg.errors.CheckViolation):
        sql(db, "INSERT INTO submission.dossier_check_set (dossier_id, version, rules_version,"
                " checks) VALUES (%s, 999, 'test', %s::jsonb)", dossier_id, json.dumps(bad))
