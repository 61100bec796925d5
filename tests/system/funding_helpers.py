"""What the funding system tests share: decisions published as instruction will, and waiting.

Until instruction emits its decisions, a test writes them into instruction.outbox as the
database owner, with the payload api-spec/asyncapi.yaml gives dossier.phase2_decided;
instruction's relay publishes them and funding's inbox applies them.
"""
import json
import uuid
from datetime import datetime, timezone

import requests

from conftest import sql, wait_until

INSTRUCTION_TOPIC = "ptce.instruction.events"
TIMEOUT = 15
# SIRETs with a valid Luhn key, for beneficiaries.
SIRETS = ["73282932000074", "35600000000048", "44306184100047", "55203253400646",
          "13002526500013", "12000101100010"]


def art10_clauses(amount_cents=1000, months=24):
    """Clauses of the shape the service builds (api-spec's FundingClauses), for agreements that a
    test creates through the SQL; the database refuses an agreement without them."""
    return {"legal_basis": "loi n° 2000-321 du 12 avril 2000, article 10", "objet": "test",
            "montant": f"{amount_cents // 100}.{amount_cents % 100:02d} euros",
            "modalites_versement": [], "conditions_utilisation": "test", "duree_mois": months}


def new_wave():
    return f"f{uuid.uuid4().hex[:12]}"


def decision_event(dossier_id, wave, region="84", outcome="phase2_laureate", siret=SIRETS[0],
                   name="Pôle du Val", event_id=None):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": "/ptce/instruction",
        "type": "dossier.phase2_decided", "subject": dossier_id, "time": now,
        "datacontenttype": "application/json",
        "data": {"dossier_id": dossier_id, "wave": wave, "region": region, "phase": 2,
                 "outcome": outcome, "motivation": None, "reference": f"CNA-{wave}/{dossier_id[:4]}",
                 "decided_at": now, "decided_by": "0123456789abcdef", "version": 3,
                 "ptce_name": f"PTCE {name}", "beneficiary": {"siret": siret, "name": name}},
    }


def publish(db, *events):
    """Commits the events into instruction.outbox in one transaction, in order."""
    with db.transaction():
        for ev in events:
            sql(db, "INSERT INTO instruction.outbox (event_id, topic, key, type, payload)"
                    " VALUES (%s, %s, %s, %s, %s)",
                ev["id"], INSTRUCTION_TOPIC, ev["subject"], ev["type"], json.dumps(ev))


def agreement_of(db, dossier_id, timeout=60):
    def found():
        rows = sql(db, "SELECT id FROM funding.agreement WHERE dossier_id = %s", dossier_id)
        return str(rows[0][0]) if rows else None
    return wait_until(found, timeout=timeout, what=f"the agreement of dossier {dossier_id}")


def applied(db, event_id):
    return sql(db, "SELECT count(*) FROM funding.inbox WHERE event_id = %s", event_id)[0][0] == 1


def open_envelope(url, headers, wave, amount_cents, region=None):
    r = requests.post(f"{url}/v1/envelopes", headers=headers, timeout=TIMEOUT,
                      json={"wave": wave, "region": region, "amount_cents": amount_cents})
    assert r.status_code == 201, r.text
    return r.json()


def get_agreement(url, headers, aid):
    r = requests.get(f"{url}/v1/agreements/{aid}", headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json(), r.headers["ETag"]


def sign(url, headers, aid, signer, etag=None):
    if etag is None:
        _, etag = get_agreement(url, headers, aid)
    return requests.post(f"{url}/v1/agreements/{aid}/signatures", json={"signer": signer},
                         headers={**headers, "If-Match": etag}, timeout=TIMEOUT)


def pay(url, headers, tranche_id, reference="VIR-1", paid_on="2026-03-01"):
    return requests.post(f"{url}/v1/tranches/{tranche_id}/payments", headers=headers,
                         json={"reference": reference, "paid_on": paid_on}, timeout=TIMEOUT)


def approve_year(url, headers, aid, year):
    r = requests.get(f"{url}/v1/agreements/{aid}/reports", headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    for rep in r.json()["items"]:
        if rep["year"] != year:
            continue
        body = ({"indicators": [{"code": "members", "baseline": 10, "target": 20, "value": 14}]}
                if rep["kind"] == "progress" else
                {"lines": [{"heading": "64", "planned_cents": 5000000, "actual_cents": 4800000},
                           {"heading": "74", "planned_cents": 5000000, "actual_cents": 5000000}]})
        s = requests.post(f"{url}/v1/reports/{rep['id']}/submission", json=body, headers=headers,
                          timeout=TIMEOUT)
        assert s.status_code == 200, s.text
        v = requests.post(f"{url}/v1/reports/{rep['id']}/review", json={"decision": "approved"},
                          headers=headers, timeout=TIMEOUT)
        assert v.status_code == 200, v.text
        assert v.json()["state"] == "approved"


def ledger_problems(db):
    """funding.ledger_check() — its functions find their tables through the search_path."""
    with db.transaction():
        sql(db, "SET LOCAL search_path TO funding")
        return sql(db, "SELECT ledger_check()")[0][0]
