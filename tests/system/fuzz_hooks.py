"""Schemathesis hooks of test_contract_fuzz.py: what a conforming client does that JSON Schema
cannot say. The schemathesis CLI loads this file through SCHEMATHESIS_HOOKS.

- `Idempotency-Key` is unique per request (api-spec: "unique per API key"): a generated valid
  key is replaced by a fresh UUID, so that two cases with the same generated key and different
  bodies do not meet the designed 422 of a reused key. Missing, empty or too long keys (the
  negative cases) are sent as generated.
- `POST /v1/waves`: `deposit_closes_at` must be after `deposit_opens_at`, a relation between two
  fields that no schema keyword expresses (the operation's description states it). A generated
  body whose two valid times break it gets an open-ended window (`deposit_closes_at: null`).
"""
import os
import re
import uuid
from datetime import datetime, timedelta, timezone

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


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    label = f"{case.method.upper()} {case.operation.path}"
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if key is not None and 1 <= len(key.encode("utf-8")) <= 200:
        case.headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"
    if label == "POST /v1/waves" and isinstance(case.body, dict):
        opens = ds_instant(case.body.get("deposit_opens_at"))
        closes = ds_instant(case.body.get("deposit_closes_at"))
        if opens and closes and closes <= opens:
            case.body["deposit_closes_at"] = None
