"""Schemathesis hooks of test_contract_fuzz.py: what a conforming client does that JSON Schema
cannot say. The schemathesis CLI loads this file through SCHEMATHESIS_HOOKS.

- `Idempotency-Key` is unique per request (api-spec: "unique per API key"): a generated valid
  key is replaced by a fresh UUID, so that two cases with the same generated key and different
  bodies do not meet the designed 422 of a reused key. Missing, empty or too long keys (the
  negative cases) are sent as generated.
- A client never builds a cursor (api-spec: "opaque", a token the server signed): in the cases
  meant to be valid, a generated `cursor` is left out; invalid cases send theirs (400).
- Rules between two fields, or between a field and today, that no schema keyword expresses
  (each operation's description states its rule): a generated valid body that breaks one is
  brought back inside it, only when the fields concerned are valid themselves.
  `POST /v1/waves`: `deposit_closes_at` after `deposit_opens_at` (else null, an open window);
  `POST /v1/support/actions`: `ends_on` not before `starts_on` (else `starts_on`);
  `POST /v1/charter/signatures`: `signed_on` not in the future (else today, UTC), and the
  SIRET's Luhn check digit (else the right one; La Poste's SIRETs, 356000000…, are left alone).
"""
import os
import re
import uuid
from datetime import date, datetime, timedelta, timezone

import schemathesis
import yaml

_SPEC = os.path.join(os.path.dirname(__file__), "..", "..", "api-spec", "openapi.yaml")
with open(_SPEC, encoding="utf-8") as _f:
    DS_TIME = re.compile(yaml.safe_load(_f)["components"]["schemas"]["DsTime"]["pattern"])
_FIELDS = re.compile(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.\d*)? *"
                     r"(?:UTC|Z|([+-]?)(\d\d):?(\d\d))$")


def ds_instant(text):
    """The instant of a time the spec's DsTime accepts, else None (fractions dropped)."""
    if not isinstance(text, str) or len(text) > 64 or not DS_TIME.search(text):
        return None
    y, mo, d, h, mi, s, sign, zh, zm = _FIELDS.match(text).groups()
    local = datetime(int(y), int(mo), int(d), int(h), int(mi), tzinfo=timezone.utc)
    offset = timedelta(hours=int(zh or 0), minutes=int(zm or 0)) * (-1 if sign == "-" else 1)
    return local + timedelta(seconds=int(s)) - offset


def iso_date(text):
    """The date of a valid SupportDate, else None."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def wave_window(body):
    opens = ds_instant(body.get("deposit_opens_at"))
    closes = ds_instant(body.get("deposit_closes_at"))
    if opens and closes and closes <= opens:
        body["deposit_closes_at"] = None


def action_dates(body):
    starts, ends = iso_date(body.get("starts_on")), iso_date(body.get("ends_on"))
    if starts and ends and ends < starts:
        body["ends_on"] = body["starts_on"]


def luhn_completed(digits):
    """digits (14) with its last digit replaced by the Luhn check digit of the 13 before it."""
    total = 0
    for i, c in enumerate(reversed(digits[:13])):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return digits[:13] + str((10 - total % 10) % 10)


def charter_signature(body):
    signed, today = iso_date(body.get("signed_on")), datetime.now(timezone.utc).date()
    if signed and signed > today:
        body["signed_on"] = today.isoformat()
    siret = body.get("siret")
    if isinstance(siret, str) and re.fullmatch(r"[0-9]{14}", siret) and not siret.startswith("356000000"):
        body["siret"] = luhn_completed(siret)


RULES = {"POST /v1/waves": wave_window, "POST /v1/support/actions": action_dates,
         "POST /v1/charter/signatures": charter_signature}


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    label = f"{case.method.upper()} {case.operation.path}"
    meta = case.meta
    positive = meta is None or meta.generation.mode.is_positive
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if key is not None and 1 <= len(key.encode("utf-8")) <= 200:
        case.headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"
    if positive and case.query and "cursor" in case.query:
        del case.query["cursor"]
    if label in RULES and isinstance(case.body, dict):
        RULES[label](case.body)
