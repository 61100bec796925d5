"""A leaked webhook token cannot make DS work for nothing.

* The same notice spelt twice (DS's Ruby time and ISO 8601 of the same instant) is one notice:
  the second answer says duplicate and one row is stored.
* A flood of webhooks for one dossier (200 distinct notices, sent by 8 clients at once) costs
  one DS fetch, plus at most a couple for the notices that arrive while a fetch runs, not one
  fetch per notice: the fetch worker coalesces a dossier's pending notices.
"""
import datetime as dt
import threading

import requests

from conftest import sql, wait_until
from test_submission_ds import (DEMARCHE, WEBHOOK_TOKEN, all_notices_done, deposit, make_dossier,
                                now_paris, wait_dossier, webhook)


def post(urls, number, updated_text, state="en_construction"):
    data = {"procedure_id": str(DEMARCHE), "dossier_id": str(number), "state": state,
            "updated_at": updated_text}
    return requests.post(f"{urls['submission']}/v1/webhooks/ds/{WEBHOOK_TOKEN}", data=data, timeout=10)


def test_same_instant_two_spellings_is_one_notice(urls, db, dsfake):
    d = make_dossier(1001)
    deposit(dsfake, d)
    moment = now_paris() - dt.timedelta(days=3)
    ruby = moment.strftime("%Y-%m-%d %H:%M:%S %z")
    iso = moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    first, second = post(urls, d["number"], ruby), post(urls, d["number"], iso)
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["duplicate"] is False and second.json()["duplicate"] is True
    rows = sql(db, "SELECT count(*) FROM submission.ds_notification WHERE dossier_number = %s"
                   " AND updated_at = %s", d["number"], moment)
    assert rows == [(1,)]


def test_a_flood_for_one_dossier_costs_one_fetch(urls, db, dsfake):
    d = make_dossier(1001)
    deposit(dsfake, d)
    number = d["number"]
    # Slow fetches, so that the flood lands while the first one runs, as a real flood would.
    dsfake.faults({"mode": "slow", "delay_ms": 800, "dossier": number, "count": 3})
    base = now_paris() - dt.timedelta(hours=1)
    texts = [(base + dt.timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S %z") for i in range(200)]
    answers = []

    def client(part):
        for text in part:
            answers.append(post(urls, number, text).status_code)
    threads = [threading.Thread(target=client, args=(texts[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers.count(202) == 200, answers
    wait_dossier(db, number)
    wait_until(lambda: all_notices_done(db, number), timeout=30, what="every notice done")
    fetches = [e for e in dsfake.stats()["graphql_log"]
               if e.get("operation") == "getDossier" and e.get("number") == number]
    assert 1 <= len(fetches) <= 3, f"{len(fetches)} DS fetches for 200 notices of one dossier"
