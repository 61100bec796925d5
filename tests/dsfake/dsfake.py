#!/usr/bin/env python3
"""dsfake: a fake of the démarches-simplifiées (DS) GraphQL API v2, for tests.

The submission service talks to DS over HTTP. Its tests need a DS that answers exactly
like the real one, fails on demand, and can be inspected. This server:

* executes every incoming GraphQL document with graphql-core against DS's published
  schema, read at start-up from a path (never copied into the project), so that a query
  that does not validate against DS fails here too, and every answer has the schema's
  shape;
* answers from an in-memory store of dossiers loaded from fixtures (fixtures/), which
  tests can change through a control API;
* serves the attached files under signed, expiring URLs, like DS's object storage;
* injects faults on request: rate limiting (429), server errors, slowness, dropped
  connections, expired URLs, corrupted downloads.

Start it:
    python3 tests/dsfake/dsfake.py --port 0 --token test-token
It prints "READY <port>" on stdout once it listens (port 0 picks a free port).

Behaviours copied from DS's code (demarches-simplifiees.fr, app/graphql, config/):
* POST /api/v2/graphql, body {query, variables, operationName}. GraphQL errors come back
  with HTTP 200 and errors[].extensions.code ("not_found", "bad_request", ...); a
  document that does not parse gives HTTP 400 with code "graphql_parse_failed".
* Authentication: "Authorization: Bearer <token>". DS answers an unknown or missing
  token with HTTP 403 (code "forbidden": "Without a token, only persisted queries are
  allowed") and an expired token with HTTP 401 (code "unauthorized", "Token expired").
  --unknown-token-status can turn the former into a 401.
* Rate limit (rack-attack): per Authorization header, fixed one-minute windows; a
  throttled request gets HTTP 429, "RateLimit-Remaining: 0", "RateLimit-Reset: <epoch
  seconds of the end of the window>", a plain-text body and NO Retry-After header.
* Pages: at most 100 nodes, 100 by default; a larger "first" is clamped, not refused.
  Ordered by (deposit date, id), or by (last update, id) when updatedSince is given;
  cursors are unpadded url-safe base64 of "<UTC timestamp with nanoseconds>;<id>".
* Some champ types are only reported as themselves when the query document holds a
  fragment on that type (YesNoChamp otherwise comes back as a CheckboxChamp, RegionChamp,
  DropDownListChamp, CommuneChamp... as a TextChamp): see CHAMP_TYPE_FALLBACKS.
* Files: checksum is the base64 of the MD5 of the bytes; URLs expire after one hour;
  files whose virus scan is neither "safe" nor "pending" are left out of "files".
* Dates are ISO 8601 with the Paris offset and whole seconds ("2021-06-01T09:15:00+02:00").

Mutations (instruction's write-back): dossierPasserEnInstruction (from en_construction),
dossierAccepter, dossierRefuser, dossierClasserSansSuite (from en_instruction) and
dossierRepasserEnConstruction (from en_instruction). Their input is checked against the
schema's input types (a missing motivation where DS requires one fails validation); an
instructeurId outside --instructeur and the dossier's groupe instructeur's instructeurs is
DS's permission error, a dossier in another state "Le dossier est déjà <état>", both as
errors[] in the payload with a null dossier and HTTP 200, as DS answers. A successful one
changes the state and dateDerniereModification (and the date of the step). Every one, refused
or not, is kept in the mutation log of the control API.

Fixture shape (files in fixtures/dossiers/*.json and bodies of POST /_control/dossiers):
the schema's own JSON shape (camelCase field names), plus
* "__typename" on every object typed by an interface (Champ, Demandeur, ChampDescriptor,
  Column, GeoArea): it picks the concrete type;
* a File given as {"filename", "contentType", and one of "path" (relative to the fixtures
  folder), "contentBase64" or "content" (text)}, optional "createdAt" and
  "virusScanResult": the fake keeps the bytes and computes byteSize, byteSizeBigInt and
  checksum; for large-file tests, "size": N repeats the content up to exactly N bytes, and
  "declaredByteSize": N makes the API announce N bytes whatever is served (a blob whose
  metadata lies); "urlHost": H gives its URL that host name instead of the fake's (still
  served by the fake: a file host the client must refuse to download from);
* "demarche": {"number": N} links a dossier to a démarche of fixtures/demarche.json.
Absent fields take defaults (see Store._normalise_dossier); an absent non-null list is
answered as [] and an absent non-null Boolean as false; other absent non-null fields give
the same "Cannot return null" error (code "invalid_null") that DS gives for bad data.

Control API (JSON in and out, no authentication, for tests only):
  POST   /_control/dossiers           upsert one dossier or a list of dossiers
  GET    /_control/dossiers/<number>  the stored dossier (fixture shape, computed fields)
  DELETE /_control/dossiers/<number>  delete it: it then appears in deletedDossiers;
                                      optional body {"reason": ..., "dateSupression": ...}
  POST   /_control/faults             add one fault or a list of faults (see FAULT_MODES)
  GET    /_control/faults             the active faults
  DELETE /_control/faults             remove every fault
  POST   /_control/config             {"rate_limit": N or null, "url_ttl": seconds,
                                      "instructeurs": [ids the mutations accept]}
  GET    /_control/mutations[?dossier=N]  the mutations received, in arrival order, each
                                      {"at", "mutation", "dossier", "input", "ok", "errors",
                                      "state_before", "state"}
  POST   /_control/reset              reload the fixtures; clear faults, stats, limiter, config
  GET    /_control/stats              request counters, and "graphql_log": the latest
                                      GraphQL requests in arrival order, each {"at": epoch
                                      seconds (float) of arrival, "operation", "number" (the
                                      variables' dossier number, or null), "status" (absent
                                      for a dropped connection), "rate_limit_reset" (429 only)}
Fault examples:
  {"mode": "429", "count": 5, "reset_in": 2}   429 like DS's rate limiter, reset in 2 s
  {"mode": "500", "count": 3}                  HTTP 500 like DS ("status": 502/503 also)
  {"mode": "slow", "delay_ms": 3000, "count": 2}
  {"mode": "down", "count": 1}                 close the connection without answering
  {"mode": "401", "count": 1}                  "Token expired"
  {"mode": "expire_urls"}                      every file URL handed out is already expired
  {"mode": "bad_checksum"}                     downloads serve bytes that miss the checksum
"count" absent means "until reset". "target" is "graphql" (default), "files" or "any"
for the request faults (429, 500, slow, down, 401). "dossier": N narrows a request fault
to the requests about dossier N: a GraphQL request whose variables hold "number": N (or a
mutation whose input.dossierId is N's global id), or a download of one of its files; other
requests pass it by.
  {"mode": "slow", "delay_ms": 2000, "count": 1, "dossier": 10000001}
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit
from zoneinfo import ZoneInfo

from graphql import (
    GraphQLBoolean,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    StringValueNode,
    Visitor,
    build_schema,
    execute,
    is_interface_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    is_union_type,
    parse,
    validate,
    visit,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_SCHEMA = REPO_ROOT.parent / "shared" / "ds" / "schema.graphql"
DEFAULT_FIXTURES = HERE / "fixtures"

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc

MAX_PAGE_SIZE = 100  # DS: default_max_page_size 100
DEFAULT_PAGE_SIZE = 100  # DS: default_page_size 100
DEFAULT_URL_TTL = 3600  # DS: active_storage.service_urls_expire_in = 1.hour
MAX_BODY_BYTES = 10 * 1024 * 1024
RATE_LIMIT_PERIOD = 60  # rack-attack throttle period for /api/v2/graphql, in seconds
GRAPHQL_LOG_SIZE = 5000  # entries of stats["graphql_log"] kept (the oldest are dropped)

# DS (app/graphql/types/champ_type.rb) reports these champ types as themselves only when
# the query document holds a fragment (inline or named) on that type; otherwise it answers
# with the older type on the right, which is what clients written before the type existed
# expect. A client that forgets "... on YesNoChamp" therefore gets a CheckboxChamp.
CHAMP_TYPE_FALLBACKS = {
    "AddressChamp": "TextChamp",
    "YesNoChamp": "CheckboxChamp",
    "DatetimeChamp": "DateChamp",
    "CommuneChamp": "TextChamp",
    "DepartementChamp": "TextChamp",
    "RegionChamp": "TextChamp",
    "PaysChamp": "TextChamp",
    "HeaderSectionChamp": "TextChamp",
    "ExplicationChamp": "TextChamp",
    "DropDownListChamp": "TextChamp",
}

# The fault modes that the control API accepts. Request faults stop or delay a request;
# the two others change what the fake hands out.
REQUEST_FAULTS = {"429", "500", "slow", "down", "401"}
FAULT_MODES = REQUEST_FAULTS | {"expire_urls", "bad_checksum"}
FAULT_TARGETS = {"graphql", "files", "any"}

# DS's throttled response body (config/initializers/rack_attack.rb).
RATE_LIMIT_BODY = (
    "Calme toi, cowboy ! T'enchaines un peu trop les requêtes. Respire un peu réessaie dans un petit moment.\n"
    "Calm down, cowboy! You're making too many requests. Take a breather and try again soon.\n"
)


def log(message: str) -> None:
    """Write one line on stderr; stdout is kept for the READY line."""
    sys.stderr.write(f"dsfake: {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------
# Identifiers, times and cursors, encoded the way DS encodes them.
# --------------------------------------------------------------------------------------


def typed_id(kind: str, ident: object) -> str:
    """graphql-ruby's UniqueWithinType.encode: padded base64 of "<kind>-<id>"."""
    return base64.b64encode(f"{kind}-{ident}".encode()).decode()


def now() -> dt.datetime:
    return dt.datetime.now(PARIS)


def parse_time(value: str) -> dt.datetime:
    """Parse an ISO 8601 date-time; a time without offset is taken as Paris time (DS's zone)."""
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=PARIS)
    return parsed


def format_time(value: dt.datetime) -> str:
    """DS's ISO8601DateTime output: Paris offset, whole seconds."""
    return value.astimezone(PARIS).isoformat(timespec="seconds")


def encode_cursor(moment: dt.datetime, ident: int) -> str:
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}000Z;{ident}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
        stamp, ident = text.split(";")
        whole, _, fraction = stamp.rstrip("Z").partition(".")
        moment = dt.datetime.fromisoformat(whole).replace(tzinfo=UTC)
        moment = moment.replace(microsecond=int((fraction + "000000")[:6]))
        return moment, int(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ds_error(f"Invalid cursor: {cursor!r}", "bad_request") from error


def ds_error(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


def request_dossier_number(body):
    """The dossier number a GraphQL request is about ("number" in its variables), or None."""
    variables = body.get("variables") if isinstance(body, dict) else None
    if isinstance(variables, str):
        try:
            variables = json.loads(variables)
        except json.JSONDecodeError:
            return None
    number = variables.get("number") if isinstance(variables, dict) else None
    return number if isinstance(number, int) else None


def graphql_error_body(message: str, code: str, **extra: object) -> dict:
    """The body DS's controllers render for errors outside GraphQL execution."""
    return {"errors": [{"message": message, "extensions": {"code": code, **extra}}], "data": None}


# --------------------------------------------------------------------------------------
# The store: démarches, dossiers, deleted dossiers and file blobs.
# --------------------------------------------------------------------------------------


class FixtureError(ValueError):
    """A fixture (file or control API body) that the fake cannot accept."""


class Store:
    def __init__(self, schema: GraphQLSchema, fixtures_dir: Path):
        self.schema = schema
        self.fixtures_dir = fixtures_dir
        self.demarches: dict[int, dict] = {}
        self.dossiers: dict[int, dict] = {}
        self.deleted: list[dict] = []
        self.blobs: dict[str, dict] = {}
        self._deleted_seq = 0

    # Loading -----------------------------------------------------------------------

    def load(self) -> None:
        """(Re)load every fixture from disk, forgetting all changes made since."""
        self.demarches.clear()
        self.dossiers.clear()
        self.deleted.clear()
        self.blobs.clear()
        self._deleted_seq = 0
        demarche_file = self.fixtures_dir / "demarche.json"
        raw = json.loads(demarche_file.read_text(encoding="utf-8"))
        for demarche in raw if isinstance(raw, list) else [raw]:
            self._check_typenames(demarche)
            self.demarches[int(demarche["number"])] = demarche
        for path in sorted((self.fixtures_dir / "dossiers").glob("*.json")):
            self.upsert(json.loads(path.read_text(encoding="utf-8")))

    @property
    def default_demarche(self) -> int:
        return next(iter(self.demarches))

    # Dossiers ----------------------------------------------------------------------

    def upsert(self, raw: dict) -> dict:
        dossier = self._normalise_dossier(raw)
        number = dossier["number"]
        self._drop_blobs(number)
        self._register_files(dossier, number)
        self.dossiers[number] = dossier
        return dossier

    def delete(self, number: int, reason: str, when: dt.datetime) -> dict:
        dossier = self.dossiers.pop(number)
        self._drop_blobs(number)
        self._deleted_seq += 1
        record = {
            "id": typed_id("DeletedDossier", self._deleted_seq),
            "number": number,
            "state": dossier["state"],
            "reason": reason,
            "dateSupression": format_time(when),
            "_deleted_at": when,
            "_seq": self._deleted_seq,
            "_demarche": dossier["demarche"]["number"],
            "_groupe": (dossier.get("groupeInstructeur") or {}).get("number"),
        }
        self.deleted.append(record)
        return record

    def _normalise_dossier(self, raw: dict) -> dict:
        """Validate a fixture-shaped dossier and fill the defaults DS would have."""
        if not isinstance(raw, dict) or "number" not in raw:
            raise FixtureError("a dossier is a JSON object with at least a 'number'")
        dossier = copy.deepcopy(raw)
        try:
            number = int(dossier["number"])
        except (TypeError, ValueError) as error:
            raise FixtureError("'number' must be an integer") from error
        dossier["number"] = number
        demarche_number = int((dossier.get("demarche") or {}).get("number", self.default_demarche))
        if demarche_number not in self.demarches:
            raise FixtureError(f"unknown démarche {demarche_number}")
        dossier["demarche"] = {"number": demarche_number}
        states = self.schema.type_map["DossierState"].values
        dossier.setdefault("state", "en_construction")
        if dossier["state"] not in states:
            raise FixtureError(f"unknown state {dossier['state']!r}; expected one of {sorted(states)}")

        # Dates: kept as datetimes (microseconds, for ordering and cursors) and as DS's
        # whole-second strings. A date the caller leaves out is "now", as on a real change.
        try:
            depose_at = parse_time(dossier["dateDepot"]) if dossier.get("dateDepot") else now()
            updated_at = (parse_time(dossier["dateDerniereModification"])
                          if dossier.get("dateDerniereModification") else now())
        except ValueError as error:
            raise FixtureError(f"bad date: {error}") from error
        dossier["_depose_at"] = depose_at
        dossier["_updated_at"] = updated_at
        dossier["dateDepot"] = format_time(depose_at)
        dossier["dateDerniereModification"] = format_time(updated_at)

        dossier.setdefault("id", typed_id("Dossier", number))
        dossier.setdefault("archived", False)
        dossier.setdefault("prefilled", False)
        dossier.setdefault("connectionUsager", "password")
        dossier.setdefault("datePassageEnConstruction", dossier["dateDepot"])
        dossier.setdefault("dateDerniereModificationChamps", dossier["dateDerniereModification"])
        dossier.setdefault("dateDerniereModificationAnnotations", dossier["dateDerniereModification"])
        dossier.setdefault("usager", {"id": typed_id("User", number), "email": f"usager-{number}@example.org"})
        groupes = self.demarches[demarche_number].get("groupeInstructeurs") or []
        if groupes:
            dossier.setdefault("groupeInstructeur", groupes[0])
        for key in ("champs", "annotations"):
            for champ in dossier.setdefault(key, []):
                self._normalise_champ(champ, dossier["dateDerniereModificationChamps"])
        self._check_typenames(dossier)
        return dossier

    def _normalise_champ(self, champ: dict, updated_at: str) -> None:
        if not isinstance(champ, dict) or "__typename" not in champ:
            raise FixtureError("every champ needs a '__typename'")
        champ.setdefault("id", champ.get("champDescriptorId"))
        champ.setdefault("prefilled", False)
        champ.setdefault("columns", [])
        champ.setdefault("updatedAt", updated_at)
        champ.setdefault("stringValue", None)
        for row in champ.get("rows") or []:
            for child in row.get("champs") or []:
                self._normalise_champ(child, updated_at)

    def _check_typenames(self, node: object) -> None:
        """Refuse a "__typename" that is not an object type of the schema, early and clearly."""
        if isinstance(node, dict):
            typename = node.get("__typename")
            if typename is not None and not is_object_type(self.schema.type_map.get(typename)):
                raise FixtureError(f"'{typename}' is not an object type of the DS schema")
            for value in node.values():
                self._check_typenames(value)
        elif isinstance(node, list):
            for value in node:
                self._check_typenames(value)

    # Files -------------------------------------------------------------------------

    def _register_files(self, node: object, number: int) -> None:
        """Turn every file input of a dossier into a schema File backed by a blob."""
        if isinstance(node, dict):
            for key, value in list(node.items()):
                if isinstance(value, dict) and self._is_file_input(value):
                    node[key] = self._make_file(value, number)
                elif isinstance(value, list):
                    node[key] = [self._make_file(item, number)
                                 if isinstance(item, dict) and self._is_file_input(item) else item
                                 for item in value]
                    self._register_files(node[key], number)
                else:
                    self._register_files(value, number)
        elif isinstance(node, list):
            for value in node:
                self._register_files(value, number)

    @staticmethod
    def _is_file_input(node: dict) -> bool:
        return "filename" in node and any(k in node for k in ("path", "contentBase64", "content"))

    def _make_file(self, spec: dict, number: int) -> dict:
        if "path" in spec:
            path = (self.fixtures_dir / spec["path"]).resolve()
            if self.fixtures_dir.resolve() not in path.parents:
                raise FixtureError(f"file path {spec['path']!r} leaves the fixtures folder")
            try:
                data = path.read_bytes()
            except OSError as error:
                raise FixtureError(f"cannot read {spec['path']!r}: {error.strerror}") from error
        elif "contentBase64" in spec:
            try:
                data = base64.b64decode(spec["contentBase64"], validate=True)
            except binascii.Error as error:
                raise FixtureError("contentBase64 is not valid base64") from error
        else:
            data = str(spec["content"]).encode()
        if "size" in spec:
            size = spec["size"]
            if not isinstance(size, int) or size < 1 or size > 256 * 1024 * 1024 or not data:
                raise FixtureError("'size' must be a positive byte count (256 MiB at most) of non-empty content")
            data = (data * (size // len(data) + 1))[:size]
        declared = spec.get("declaredByteSize", len(data))
        if not isinstance(declared, int) or declared < 0:
            raise FixtureError("'declaredByteSize' must be a byte count")
        token = secrets.token_urlsafe(18)
        self.blobs[token] = {
            "data": data,
            "filename": spec["filename"],
            "contentType": spec.get("contentType", "application/octet-stream"),
            "dossier": number,
            "urlHost": spec.get("urlHost"),
        }
        return {
            "filename": spec["filename"],
            "contentType": spec.get("contentType", "application/octet-stream"),
            "byteSize": declared,
            "byteSizeBigInt": declared,
            # DS (Active Storage) stores the base64 of the MD5 digest of the bytes.
            "checksum": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "createdAt": spec.get("createdAt") or format_time(now()),
            "virusScanResult": spec.get("virusScanResult", "safe"),
            "_blob": token,
        }

    def _drop_blobs(self, number: int) -> None:
        for token in [t for t, blob in self.blobs.items() if blob["dossier"] == number]:
            del self.blobs[token]


def public_view(node: object) -> object:
    """A stored object as JSON: private keys (leading "_") left out, datetimes as strings."""
    if isinstance(node, dict):
        return {k: public_view(v) for k, v in node.items() if not k.startswith("_")}
    if isinstance(node, list):
        return [public_view(v) for v in node]
    if isinstance(node, dt.datetime):
        return format_time(node)
    return node


# --------------------------------------------------------------------------------------
# Faults, rate limiting and statistics.
# --------------------------------------------------------------------------------------


class Faults:
    """The active faults, applied in the order they were added."""

    def __init__(self) -> None:
        self.active: list[dict] = []

    def add(self, spec: dict) -> dict:
        if not isinstance(spec, dict) or str(spec.get("mode")) not in FAULT_MODES:
            raise FixtureError(f"a fault needs a 'mode' among {sorted(FAULT_MODES)}")
        fault = dict(spec)
        fault["mode"] = str(spec["mode"])
        count = fault.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise FixtureError("'count' must be a positive integer (or absent: until reset)")
        fault.setdefault("target", "graphql")
        if fault["target"] not in FAULT_TARGETS:
            raise FixtureError(f"'target' must be one of {sorted(FAULT_TARGETS)}")
        if fault["mode"] == "slow" and not isinstance(fault.get("delay_ms"), (int, float)):
            raise FixtureError("a 'slow' fault needs 'delay_ms'")
        if "dossier" in fault and not isinstance(fault["dossier"], int):
            raise FixtureError("'dossier' must be a dossier number")
        self.active.append(fault)
        return fault

    def take(self, modes: set[str], target: str | None = None, dossier: int | None = None) -> dict | None:
        """Consume one use of the first active fault of one of `modes` aimed at `target` (and at
        `dossier`, for a fault narrowed to one dossier)."""
        for fault in self.active:
            if "dossier" in fault and fault["dossier"] != dossier:
                continue
            if fault["mode"] in modes and (target is None or fault["target"] in (target, "any")):
                if fault.get("count") is not None:
                    fault["count"] -= 1
                    if fault["count"] == 0:
                        self.active.remove(fault)
                return dict(fault)
        return None


class RateLimiter:
    """rack-attack's fixed-window throttle: at most `limit` requests per key and minute."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.counts: dict[tuple[str, int], int] = {}

    def hit(self, key: str, moment: float) -> int | None:
        """Count a request; return the epoch second the window resets if it is throttled."""
        if not self.limit:
            return None
        window = int(moment) // RATE_LIMIT_PERIOD
        # Only the current window matters; dropping the others keeps the table small.
        self.counts = {k: v for k, v in self.counts.items() if k[1] == window}
        count = self.counts.get((key, window), 0) + 1
        self.counts[(key, window)] = count  # throttled requests count too, as in rack-attack
        return (window + 1) * RATE_LIMIT_PERIOD if count > self.limit else None


def new_stats() -> dict:
    return {
        "graphql_requests": {},  # operationName -> requests received (anonymous: "")
        "graphql_requests_total": 0,
        "rate_limited": 0,  # 429 answers, from faults or from the rate limiter
        "file_downloads": 0,  # files served with 200
        "file_downloads_denied": 0,  # 403 on expired or tampered URLs
        "file_urls_issued": 0,
        "faults_served": {},  # mode -> times a fault was applied
        "graphql_log": [],  # the latest GraphQL requests: {at, operation, status, rate_limit_reset}
    }


# --------------------------------------------------------------------------------------
# The GraphQL side: resolvers bound onto the schema built from DS's SDL.
# --------------------------------------------------------------------------------------


class RequestContext:
    """What the resolvers of one GraphQL request need."""

    def __init__(self, app: "App", fragment_types: set[str]):
        self.app = app
        self.store = app.store
        self.fragment_types = fragment_types


class _TypeConditions(Visitor):
    """Collects the type names used in inline fragments and fragment definitions."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_inline_fragment(self, node, *_args):
        if node.type_condition is not None:
            self.names.add(node.type_condition.name.value)

    def enter_fragment_definition(self, node, *_args):
        self.names.add(node.type_condition.name.value)


def fragment_types_of(document) -> set[str]:
    visitor = _TypeConditions()
    visit(document, visitor)
    return visitor.names


def default_resolver(source, info, **_args):
    """Read the field from the fixture dict; absent non-null lists are [] and Booleans false."""
    if isinstance(source, dict):
        if info.field_name in source:
            return source[info.field_name]
        return_type = info.return_type
        if is_non_null_type(return_type):
            inner = return_type.of_type
            if is_list_type(inner):
                return []
            if inner is GraphQLBoolean:
                return False
        return None
    return getattr(source, info.field_name, None)


def resolve_interface_type(value, info, abstract_type):
    """Pick the concrete type of an interface or union from the fixture's "__typename"."""
    typename = value.get("__typename") if isinstance(value, dict) else None
    if typename is None:
        raise GraphQLError(f"fixture object for {abstract_type.name} has no __typename")
    if abstract_type.name == "Champ":
        fallback = CHAMP_TYPE_FALLBACKS.get(typename)
        if fallback and typename not in info.context.fragment_types:
            return fallback
    return typename


def paginate(entries: list[tuple[dt.datetime, int, dict]], *, first=None, last=None,
             after=None, before=None, order="ASC") -> dict:
    """DS's CursorConnection (app/graphql/connections/cursor_connection.rb), in Python.

    `entries` are (sort time, id, node). DS sorts by (time, id), takes one more node than
    the page size to learn whether another page exists, and clamps the size to 100.
    """
    after = after or None  # Ruby's present?: an empty string is no cursor
    before = before or None
    if first is not None and last is not None:
        raise ds_error('Arguments "first" and "last" are exclusive', "bad_request")
    if before is not None and after is not None:
        raise ds_error('Arguments "before" and "after" are exclusive', "bad_request")
    if first is not None and first < 0:
        raise ds_error('Argument "first" must be a non-negative integer', "bad_request")
    if last is not None and last < 0:
        raise ds_error('Argument "last" must be a non-negative integer', "bad_request")
    if order == "DESC":  # the deprecated order argument, mapped onto last as DS does
        if last is not None:
            first, last = min(last, MAX_PAGE_SIZE), None
        else:
            first, last = None, min(first if first is not None else DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)

    size = first if first is not None else (last if last is not None else DEFAULT_PAGE_SIZE)
    limit = min(size, MAX_PAGE_SIZE) + 1
    inverted = last is not None or before is not None
    ordered = sorted(entries, key=lambda e: (e[0], e[1]), reverse=inverted)
    if before is not None:
        bound = decode_cursor(before)
        ordered = [e for e in ordered if (e[0], e[1]) < bound]
    elif after is not None:
        bound = decode_cursor(after)
        ordered = [e for e in ordered if (e[0], e[1]) > bound]
    window = ordered[:limit]
    page = window[: limit - 1]
    if inverted:
        page.reverse()
    edges = [{"cursor": encode_cursor(moment, ident), "node": node} for moment, ident, node in page]
    return {
        "edges": edges,
        "nodes": [edge["node"] for edge in edges],
        "pageInfo": {
            "hasPreviousPage": after is not None or (len(window) >= limit and inverted),
            "hasNextPage": before is not None or (len(window) >= limit and not inverted),
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def _page_args(args: dict) -> dict:
    return {k: args.get(k) for k in ("first", "last", "after", "before")} | {"order": args.get("order", "ASC")}


def dossiers_connection(store: Store, keep, args: dict) -> dict:
    """Demarche.dossiers and GroupeInstructeurWithDossiers.dossiers (DemarcheType#dossiers)."""
    dossiers = [d for d in store.dossiers.values() if keep(d)]
    if args.get("state") is not None:
        dossiers = [d for d in dossiers if d["state"] == args["state"]]
    if args.get("archived") is not None:
        dossiers = [d for d in dossiers if bool(d.get("archived")) == args["archived"]]
    # revision, minRevision and maxRevision are accepted and ignored: the fake has one revision.
    updated_since = args.get("updatedSince")
    if updated_since is not None:
        dossiers = [d for d in dossiers if d["_updated_at"] >= updated_since]
        key = "_updated_at"
    else:
        if args.get("createdSince") is not None:
            dossiers = [d for d in dossiers if d["_depose_at"] >= args["createdSince"]]
        key = "_depose_at"
    return paginate([(d[key], d["number"], d) for d in dossiers], **_page_args(args))


def deleted_connection(store: Store, keep, args: dict) -> dict:
    records = [r for r in store.deleted if keep(r)]
    if args.get("deletedSince") is not None:
        records = [r for r in records if r["_deleted_at"] >= args["deletedSince"]]
    return paginate([(r["_deleted_at"], r["_seq"], r) for r in records], **_page_args(args))


def _find_groupe(store: Store, number: int) -> dict | None:
    for demarche in store.demarches.values():
        for groupe in demarche.get("groupeInstructeurs") or []:
            if groupe.get("number") == number:
                return {**groupe, "_demarche": demarche["number"]}
    return None


def _filter_by_id(items: list, ident) -> list:
    return [item for item in items if ident is None or item.get("id") == ident]


# The mutations that change a dossier's state (app/graphql/mutations/dossier_*.rb): the states
# each one starts from, the state it leaves, and the date it sets.
MUTATIONS = {
    "dossierPasserEnInstruction": ({"en_construction"}, "en_instruction", "datePassageEnInstruction"),
    "dossierAccepter": ({"en_instruction"}, "accepte", "dateTraitement"),
    "dossierRefuser": ({"en_instruction"}, "refuse", "dateTraitement"),
    "dossierClasserSansSuite": ({"en_instruction"}, "sans_suite", "dateTraitement"),
    "dossierRepasserEnConstruction": ({"en_instruction"}, "en_construction", "datePassageEnConstruction"),
}
# DS's dossier_display_state, as its refusals word a state ("Le dossier est déjà accepté").
STATE_LABELS = {
    "brouillon": "en brouillon",
    "en_construction": "en construction",
    "en_instruction": "en instruction",
    "accepte": "accepté",
    "refuse": "refusé",
    "sans_suite": "classé sans suite",
}
PERMISSION_ERROR = "L’instructeur n’a pas les droits d’accès à ce dossier"
DEFAULT_INSTRUCTEUR = typed_id("Instructeur", 1)
MUTATION_LOG_SIZE = 5000


def number_of_global_id(ident: object, kind: str = "Dossier") -> int | None:
    """The number inside a global id ("RG9zc2llci0xMjM=" → 123), or None if it is not one of kind."""
    if not isinstance(ident, str):
        return None
    try:
        text = base64.b64decode(ident + "=" * (-len(ident) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix, _, number = text.partition("-")
    return int(number) if prefix == kind and number.isdigit() else None


def dossier_number_of(variables: object) -> int | None:
    """The dossier a GraphQL request is about: variables "number", or a mutation's input.dossierId."""
    if not isinstance(variables, dict):
        return None
    if isinstance(variables.get("number"), int):
        return variables["number"]
    payload = variables.get("input")
    return number_of_global_id(payload.get("dossierId")) if isinstance(payload, dict) else None


def resolve_state_mutation(_root, info, input):  # noqa: A002 - the schema's argument name
    """One of MUTATIONS, with DS's preconditions: a refusal is errors[] with a null dossier."""
    app = info.context.app
    name = info.field_name
    sources, target, date_field = MUTATIONS[name]
    number = number_of_global_id(input.get("dossierId"))
    dossier = app.store.dossiers.get(number) if number is not None else None
    if dossier is None:  # DS: loads: Types::DossierType, an unknown id is a top-level error
        raise ds_error(f"No object found for `dossierId: {input.get('dossierId')!r}`", "not_found")
    groupe = dossier.get("groupeInstructeur") or {}
    allowed = set(app.instructeurs) | {i.get("id") for i in groupe.get("instructeurs") or []}
    before = dossier["state"]
    if input.get("instructeurId") not in allowed:
        errors = [PERMISSION_ERROR]
    elif before not in sources:
        errors = [f"Le dossier est déjà {STATE_LABELS.get(before, before)}"]
    else:
        errors = []
        moment = now()
        dossier["state"] = target
        dossier[date_field] = format_time(moment)
        dossier["_updated_at"] = moment
        dossier["dateDerniereModification"] = format_time(moment)
        if target in ("accepte", "refuse", "sans_suite"):
            dossier["motivation"] = input.get("motivation")
        elif target == "en_construction":
            dossier["datePassageEnInstruction"] = None
    app.record_mutation({"at": time.time(), "mutation": name, "dossier": number, "input": dict(input),
                         "ok": not errors, "errors": errors, "state_before": before,
                         "state": dossier["state"]})
    return {"clientMutationId": input.get("clientMutationId"), "dossier": None if errors else dossier,
            "errors": [{"message": m} for m in errors] or None}


def bind_resolvers(schema: GraphQLSchema) -> None:
    """Attach the fake's resolvers and scalar coercions to the schema built from DS's SDL."""
    fields = lambda type_name: schema.type_map[type_name].fields  # noqa: E731

    def store_of(info) -> Store:
        return info.context.store

    # Query ------------------------------------------------------------------------
    def resolve_dossier(_root, info, number):
        dossier = store_of(info).dossiers.get(number)
        if dossier is None:  # DS: rescue => e; ExecutionError(e.message, code: :not_found)
            raise ds_error(f"Couldn't find Dossier with 'id'={number}", "not_found")
        return dossier

    def resolve_demarche(_root, info, number):
        demarche = store_of(info).demarches.get(number)
        if demarche is None:
            raise ds_error(f"Couldn't find Procedure with 'id'={number}", "not_found")
        return demarche

    def resolve_demarche_descriptor(_root, info, demarche):
        store = store_of(info)
        for candidate in store.demarches.values():
            if demarche.get("number") == candidate["number"] or demarche.get("id") == candidate["id"]:
                return candidate
        return None

    def resolve_groupe(_root, info, number):
        groupe = _find_groupe(store_of(info), number)
        if groupe is None:
            raise ds_error(f"Couldn't find GroupeInstructeur with 'id'={number}", "not_found")
        return groupe

    fields("Query")["dossier"].resolve = resolve_dossier
    fields("Query")["demarche"].resolve = resolve_demarche
    fields("Query")["demarcheDescriptor"].resolve = resolve_demarche_descriptor
    fields("Query")["groupeInstructeur"].resolve = resolve_groupe

    # Mutations: the five instruction writes back (see MUTATIONS); the others say so instead
    # of answering null.
    def resolve_mutation(_root, info, **_args):
        raise ds_error(f"The DS fake does not implement the mutation {info.field_name}", "not_implemented")

    for name, field in fields("Mutation").items():
        field.resolve = resolve_state_mutation if name in MUTATIONS else resolve_mutation

    # Demarche and DemarcheDescriptor -----------------------------------------------
    def active_revision(demarche: dict) -> dict:
        return demarche.get("activeRevision") or {}

    demarche_fields = fields("Demarche")
    demarche_fields["dossiers"].resolve = lambda d, info, **a: dossiers_connection(
        store_of(info), lambda x: x["demarche"]["number"] == d["number"], a)
    demarche_fields["deletedDossiers"].resolve = lambda d, info, **a: deleted_connection(
        store_of(info), lambda r: r["_demarche"] == d["number"], a)
    # Dossiers hidden by their owner but not yet deleted: the fake has none.
    demarche_fields["pendingDeletedDossiers"].resolve = lambda d, info, **a: paginate([], **_page_args(a))
    demarche_fields["champDescriptors"].resolve = lambda d, info: active_revision(d).get("champDescriptors", [])
    demarche_fields["annotationDescriptors"].resolve = lambda d, info: active_revision(d).get(
        "annotationDescriptors", [])
    demarche_fields["publishedRevision"].resolve = lambda d, info: d.get("activeRevision")
    demarche_fields["draftRevision"].resolve = lambda d, info: d.get("activeRevision")
    demarche_fields["revisions"].resolve = lambda d, info: [d["activeRevision"]] if d.get("activeRevision") else []
    demarche_fields["groupeInstructeurs"].resolve = lambda d, info, closed=None: [
        g for g in d.get("groupeInstructeurs") or [] if closed is None or bool(g.get("closed")) == closed]
    fields("DemarcheDescriptor")["revision"].resolve = lambda d, info: d.get("activeRevision")

    groupe_fields = fields("GroupeInstructeurWithDossiers")
    groupe_fields["dossiers"].resolve = lambda g, info, **a: dossiers_connection(
        store_of(info), lambda x: (x.get("groupeInstructeur") or {}).get("number") == g["number"], a)
    groupe_fields["deletedDossiers"].resolve = lambda g, info, **a: deleted_connection(
        store_of(info), lambda r: r["_groupe"] == g["number"], a)
    groupe_fields["pendingDeletedDossiers"].resolve = lambda g, info, **a: paginate([], **_page_args(a))

    # Dossier -----------------------------------------------------------------------
    dossier_fields = fields("Dossier")
    dossier_fields["demarche"].resolve = lambda d, info: store_of(info).demarches[d["demarche"]["number"]]
    dossier_fields["revision"].resolve = lambda d, info: store_of(info).demarches[
        d["demarche"]["number"]].get("activeRevision")
    for name in ("champs", "annotations", "messages", "avis"):
        dossier_fields[name].resolve = (lambda key: lambda d, info, id=None: _filter_by_id(d.get(key, []), id))(name)

    # Champs ------------------------------------------------------------------------
    # A champ answered under a fallback type (see CHAMP_TYPE_FALLBACKS) keeps its fixture
    # dict, so the fallback type's fields compute what DS computes for it.
    def text_value(champ, info):
        if champ.get("__typename") in ("TextChamp", "DropDownListChamp"):
            return champ.get("value")
        return champ.get("stringValue")

    def checkbox_value(champ, info):
        # DS: true only for "true", "on" or "1"; an unanswered yes/no is false here.
        return champ.get("value") in (True, "true", "on", "1")

    def date_value(champ, info):
        if champ.get("__typename") == "DatetimeChamp":
            return champ.get("datetime")
        return champ.get("value")

    def date_date(champ, info):
        if champ.get("__typename") == "DatetimeChamp":
            return (champ.get("datetime") or "")[:10] or None
        return champ.get("date")

    def visible_files(champ) -> list:
        # DS hides attachments whose virus scan is neither safe nor pending.
        return [f for f in champ.get("files") or [] if f.get("virusScanResult", "safe") in ("safe", "pending")]

    fields("TextChamp")["value"].resolve = text_value
    fields("CheckboxChamp")["value"].resolve = checkbox_value
    fields("DateChamp")["value"].resolve = date_value
    fields("DateChamp")["date"].resolve = date_date
    fields("PieceJustificativeChamp")["files"].resolve = lambda c, info: visible_files(c)
    fields("PieceJustificativeChamp")["file"].resolve = lambda c, info: next(iter(visible_files(c)), None)
    fields("RepetitionChamp")["champs"].resolve = lambda c, info: [
        child for row in c.get("rows") or [] for child in row.get("champs") or []]

    # Files: the URL is signed when it is handed out, with the expiry in force then.
    fields("File")["url"].resolve = lambda f, info: info.context.app.signed_url(f)

    # Abstract types: DS's schema has interfaces only today; unions would work the same way.
    for named_type in schema.type_map.values():
        if is_interface_type(named_type) or is_union_type(named_type):
            named_type.resolve_type = resolve_interface_type

    # Custom scalars: dates are checked on input and passed through as strings.
    def parse_datetime(value):
        if not isinstance(value, str):
            raise TypeError(f"ISO8601DateTime must be a string, got {value!r}")
        return parse_time(value)  # a ValueError becomes DS-like "invalid value" error

    def serialize_datetime(value):
        return format_time(value) if isinstance(value, dt.datetime) else value

    def literal(parse_value):
        def parse_literal(node, _variables=None):
            if not isinstance(node, StringValueNode):
                raise TypeError("expected a string literal")
            return parse_value(node.value)
        return parse_literal

    def parse_date(value):
        if not isinstance(value, str):
            raise TypeError(f"ISO8601Date must be a string, got {value!r}")
        dt.date.fromisoformat(value)
        return value

    scalars = schema.type_map
    scalars["ISO8601DateTime"].serialize = serialize_datetime
    scalars["ISO8601DateTime"].parse_value = parse_datetime
    scalars["ISO8601DateTime"].parse_literal = literal(parse_datetime)
    scalars["ISO8601Date"].parse_value = parse_date
    scalars["ISO8601Date"].parse_literal = literal(parse_date)
    # graphql-ruby serialises BigInt as a string, to survive JSON parsers that use doubles.
    scalars["BigInt"].serialize = lambda value: str(int(value))
    scalars["BigInt"].parse_value = lambda value: int(value)
    scalars["URL"].serialize = str


def load_schema(path: Path) -> GraphQLSchema:
    schema = build_schema(path.read_text(encoding="utf-8"))
    bind_resolvers(schema)
    return schema


# --------------------------------------------------------------------------------------
# The application state shared by the HTTP handler threads.
# --------------------------------------------------------------------------------------


class App:
    def __init__(self, options: argparse.Namespace):
        self.options = options
        self.lock = threading.RLock()  # one lock for store, faults, stats and limiter
        self.schema = load_schema(Path(options.schema))
        self.store = Store(self.schema, Path(options.fixtures))
        self.url_secret = secrets.token_bytes(32)
        self.public_url = options.public_url  # set once the port is known
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.store.load()
            self.faults = Faults()
            self.stats = new_stats()
            self.limiter = RateLimiter(self.options.rate_limit)
            self.url_ttl = self.options.url_ttl
            self.instructeurs = list(self.options.instructeur)
            self.mutations: list[dict] = []

    def record_mutation(self, entry: dict) -> None:
        """Keep what a mutation received and what came of it, for GET /_control/mutations."""
        with self.lock:
            self.mutations.append(entry)
            if len(self.mutations) > MUTATION_LOG_SIZE:
                del self.mutations[: len(self.mutations) - MUTATION_LOG_SIZE]

    def count_fault(self, mode: str) -> None:
        served = self.stats["faults_served"]
        served[mode] = served.get(mode, 0) + 1

    # Signed URLs -------------------------------------------------------------------

    def _signature(self, token: str, expires: int) -> str:
        return hmac.new(self.url_secret, f"{token}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def signed_url(self, file: dict) -> str:
        """A URL like an object-storage temporary URL: it carries its expiry and a signature."""
        with self.lock:
            expires = int(time.time()) + self.url_ttl
            if self.faults.take({"expire_urls"}) is not None:
                expires = int(time.time()) - 1
                self.count_fault("expire_urls")
            self.stats["file_urls_issued"] += 1
        token = file["_blob"]
        base = self.public_url
        host = self.store.blobs.get(token, {}).get("urlHost")
        if host:  # served by this fake under another host name (a host our client must refuse)
            parts = urlsplit(base)
            base = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        return (f"{base}/files/{token}/{quote(file['filename'])}"
                f"?expires={expires}&sig={self._signature(token, expires)}")

    def check_url(self, token: str, query: dict) -> str | None:
        """Return None if the signed URL is valid now, else an S3-like error code."""
        try:
            expires = int(query.get("expires", [""])[0])
        except ValueError:
            return "AccessDenied"
        if not hmac.compare_digest(query.get("sig", [""])[0], self._signature(token, expires)):
            return "SignatureDoesNotMatch"
        if expires < int(time.time()):
            return "Expired"
        return None

    # GraphQL -----------------------------------------------------------------------

    def run_graphql(self, body: dict) -> tuple[int, dict]:
        """Execute one GraphQL request; return (HTTP status, JSON body) as DS would."""
        query = body.get("query")
        variables = body.get("variables") or {}
        if isinstance(variables, str):  # DS accepts variables as a JSON string too
            try:
                variables = json.loads(variables) if variables.strip() else {}
            except json.JSONDecodeError as error:
                return 400, graphql_error_body(str(error), "bad_request")
        if not isinstance(variables, dict):
            return 400, graphql_error_body(f"Unexpected parameter: {variables!r}", "bad_request")
        if not isinstance(query, str) or not query.strip():
            return 200, {"errors": [{"message": "No query string was present"}]}
        try:
            document = parse(query)
        except GraphQLSyntaxError as error:
            return 400, graphql_error_body(error.message, "graphql_parse_failed")
        # graphql-ruby answers validation errors with HTTP 200; the messages differ in
        # wording from graphql-core's, the status and shape do not.
        errors = validate(self.schema, document)
        if errors:
            return 200, {"errors": [e.formatted for e in errors]}
        context = RequestContext(self, fragment_types_of(document))
        with self.lock:
            result = execute(self.schema, document, context_value=context, variable_values=variables,
                             operation_name=body.get("operationName"), field_resolver=default_resolver)
        response: dict = {}
        if result.errors:
            response["errors"] = [self._format_error(e) for e in result.errors]
        response["data"] = result.data
        return 200, response

    @staticmethod
    def _format_error(error: GraphQLError) -> dict:
        formatted = error.formatted
        if error.message.startswith("Cannot return null for non-nullable field"):
            # DS's schema type_error hook tags these errors (bad data) with invalid_null.
            formatted["extensions"] = {"code": "invalid_null"}
        original = error.original_error
        if original is not None and not isinstance(original, GraphQLError):
            log("resolver error: " + "".join(traceback.format_exception(original)).strip())
        return formatted


def operation_name_of(body: dict) -> str:
    """The operation a request runs, for the statistics ("" for anonymous ones)."""
    if body.get("operationName"):
        return str(body["operationName"])
    try:
        operations = [d for d in parse(body.get("query") or "").definitions
                      if isinstance(d, OperationDefinitionNode)]
    except GraphQLSyntaxError:
        return ""
    if len(operations) == 1 and operations[0].name is not None:
        return operations[0].name.value
    return ""


# --------------------------------------------------------------------------------------
# HTTP.
# --------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as libcurl expects from DS
    server_version = "dsfake/1.0"
    app: App  # set on the subclass built by serve()

    # Plumbing ----------------------------------------------------------------------

    def log_message(self, fmt, *args):
        if self.app.options.verbose:
            log(f"{self.address_string()} {fmt % args}")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        entry = getattr(self, "_log_entry", None)
        if entry is not None:  # a GraphQL request: its answer goes into stats["graphql_log"]
            self._log_entry = None
            with self.app.lock:
                entry["status"] = status
                if headers and "RateLimit-Reset" in headers:
                    entry["rate_limit_reset"] = int(headers["RateLimit-Reset"])
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: object, headers: dict | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode()
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, {"error": "request body too large"})
            return None
        return self.rfile.read(length) if length else b""

    def _read_json(self) -> object:
        body = self._read_body()
        if body is None:
            raise _Answered()
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except json.JSONDecodeError as error:
            self._send_json(400, {"error": f"invalid JSON: {error}"})
            raise _Answered() from error

    def _drop_connection(self) -> None:
        """Close the socket without a byte of answer (libcurl: "Empty reply from server")."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        try:
            if url.path == "/api/v2/graphql":
                if self.command != "POST":
                    self._send_json(405, {"error": "use POST"}, {"Allow": "POST"})
                else:
                    self._graphql()
            elif url.path.startswith("/files/"):
                if self.command not in ("GET", "HEAD"):
                    self._send_json(405, {"error": "use GET"}, {"Allow": "GET, HEAD"})
                else:
                    self._file(url.path, parse_qs(url.query))
            elif url.path.startswith("/_control/"):
                self._control(url.path)
            else:
                self._send_json(404, {"error": f"no route for {self.command} {url.path}"})
        except _Answered:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a bug of the fake: say so loudly, answer 500
            log("internal error: " + traceback.format_exc().strip())
            self.close_connection = True
            try:
                self._send_json(500, graphql_error_body("dsfake internal error", "internal_server_error"))
            except OSError:
                pass

    # Request faults ----------------------------------------------------------------

    def _apply_request_faults(self, target: str, dossier: int | None = None) -> bool:
        """Apply the active request faults; return True if the request was answered (or dropped)."""
        app = self.app
        while True:
            with app.lock:
                fault = app.faults.take(REQUEST_FAULTS, target, dossier)
                if fault is not None:
                    app.count_fault(fault["mode"])
                    if fault["mode"] == "429":
                        app.stats["rate_limited"] += 1
            if fault is None:
                return False
            mode = fault["mode"]
            if mode == "slow":  # delay, then let the next fault (if any) or the request run
                time.sleep(float(fault["delay_ms"]) / 1000.0)
                continue
            if mode == "down":
                self._drop_connection()
            elif mode == "429":
                reset_in = fault.get("reset_in")
                if reset_in is None:  # like rack-attack: the end of the current minute
                    reset = (int(time.time()) // RATE_LIMIT_PERIOD + 1) * RATE_LIMIT_PERIOD
                else:
                    reset = int(time.time()) + int(reset_in)
                self._send_rate_limited(reset)
            elif mode == "401":
                self._send_json(401, graphql_error_body("Token expired", "unauthorized"))
            else:  # "500" and other 5xx statuses
                status = int(fault.get("status", 500))
                if status == 500:
                    self._send_json(500, graphql_error_body("Internal Server Error", "internal_server_error",
                                                            exception_id=str(uuid.uuid4())))
                else:  # what a reverse proxy in front of DS answers
                    self._send(status, f"<html><body><h1>{status}</h1></body></html>\n".encode(),
                               "text/html; charset=utf-8")
            return True

    def _send_rate_limited(self, reset_epoch: int) -> None:
        self._send(429, RATE_LIMIT_BODY.encode(), "text/plain; charset=utf-8",
                   {"RateLimit-Remaining": "0", "RateLimit-Reset": str(reset_epoch)})

    # POST /api/v2/graphql ----------------------------------------------------------

    def _graphql(self) -> None:
        arrived = time.time()
        try:
            self._graphql_answer(arrived)
        finally:
            self._log_entry = None

    def _graphql_answer(self, arrived: float) -> None:
        app = self.app
        raw = self._read_body()
        if raw is None:
            return
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as error:
            body = None
            parse_problem = str(error)

        with app.lock:
            operation = operation_name_of(body) if body is not None else ""
            counts = app.stats["graphql_requests"]
            counts[operation] = counts.get(operation, 0) + 1
            app.stats["graphql_requests_total"] += 1
            self._log_entry = {"at": arrived, "operation": operation,
                               "number": request_dossier_number(body)}
            log_entries = app.stats["graphql_log"]
            log_entries.append(self._log_entry)
            if len(log_entries) > GRAPHQL_LOG_SIZE:
                del log_entries[: len(log_entries) - GRAPHQL_LOG_SIZE]

        # rack-attack runs before the application, keyed on the Authorization header.
        authorization = self.headers.get("Authorization")
        if authorization:
            with app.lock:
                reset = app.limiter.hit(authorization, time.time())
                if reset is not None:
                    app.stats["rate_limited"] += 1
            if reset is not None:
                self._send_rate_limited(reset)
                return

        variables = body.get("variables") if body is not None else None
        if self._apply_request_faults("graphql", dossier_number_of(variables)):
            return

        token = ""
        if authorization and authorization.startswith("Bearer "):
            token = authorization[len("Bearer "):].strip()
        if token in app.options.expired_token:
            self._send_json(401, graphql_error_body("Token expired", "unauthorized"))
            return
        if token not in app.options.token:
            status = app.options.unknown_token_status
            message = ("Without a token, only persisted queries are allowed" if status == 403
                       else "Invalid or missing token")
            self._send_json(status, graphql_error_body(message, "forbidden" if status == 403 else "unauthorized"))
            return

        if body is None:
            self._send_json(400, graphql_error_body(parse_problem, "bad_request"))
            return
        status, response = app.run_graphql(body)
        self._send_json(status, response)

    # GET /files/<token>/<name> -----------------------------------------------------

    def _file(self, path: str, query: dict) -> None:
        app = self.app
        parts = path.split("/")  # ["", "files", token, name...]
        token = parts[2] if len(parts) > 3 else ""
        with app.lock:
            blob = app.store.blobs.get(token)
        if self._apply_request_faults("files", blob["dossier"] if blob is not None else None):
            return
        if blob is None:
            self._send_s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        problem = app.check_url(token, query)
        if problem is not None:
            with app.lock:
                app.stats["file_downloads_denied"] += 1
            if problem == "Expired":
                # An expired S3 presigned URL answers 403 AccessDenied "Request has expired";
                # an OpenStack Swift temp URL answers 401: --expired-status picks one.
                self._send_s3_error(app.options.expired_status, "AccessDenied", "Request has expired")
            else:
                self._send_s3_error(403, problem, "The request signature does not match.")
            return
        data = blob["data"]
        with app.lock:
            corrupt = app.faults.take({"bad_checksum"}) is not None
            if corrupt:
                app.count_fault("bad_checksum")
            app.stats["file_downloads"] += 1
        if corrupt and data:
            # Same length, different bytes: only the checksum can tell.
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        filename = blob["filename"]
        self._send(200, data, blob["contentType"], {
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            "ETag": '"' + hashlib.md5(blob["data"]).hexdigest() + '"',
        })

    def _send_s3_error(self, status: int, code: str, message: str) -> None:
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message></Error>\n").encode()
        self._send(status, body, "application/xml")

    # /_control/... -----------------------------------------------------------------

    def _control(self, path: str) -> None:
        app = self.app
        method = self.command
        parts = [p for p in path.split("/") if p][1:]  # drop "_control"
        # Read the body first, whatever the route: an unread body would be taken for the
        # next request on this keep-alive connection.
        payload = self._read_json()
        try:
            if parts == ["dossiers"] and method == "POST":
                items = payload if isinstance(payload, list) else [payload]
                with app.lock:
                    numbers = [app.store.upsert(item)["number"] for item in items]
                self._send_json(200, {"upserted": numbers})
            elif len(parts) == 2 and parts[0] == "dossiers" and method in ("GET", "DELETE"):
                self._control_dossier(int(parts[1]), payload or {})
            elif parts == ["faults"] and method == "POST":
                with app.lock:
                    for spec in payload if isinstance(payload, list) else [payload]:
                        app.faults.add(spec)
                    active = copy.deepcopy(app.faults.active)
                self._send_json(200, {"faults": active})
            elif parts == ["faults"] and method == "GET":
                with app.lock:
                    self._send_json(200, {"faults": copy.deepcopy(app.faults.active)})
            elif parts == ["faults"] and method == "DELETE":
                with app.lock:
                    app.faults.active.clear()
                self._send_json(200, {"faults": []})
            elif parts == ["config"] and method == "POST":
                payload = payload or {}
                with app.lock:
                    if "rate_limit" in payload:
                        app.limiter = RateLimiter(payload["rate_limit"])
                    if "url_ttl" in payload:
                        app.url_ttl = int(payload["url_ttl"])
                    if "instructeurs" in payload:
                        if not isinstance(payload["instructeurs"], list):
                            raise FixtureError("'instructeurs' is a list of instructeur ids")
                        app.instructeurs = [str(i) for i in payload["instructeurs"]]
                    self._send_json(200, {"rate_limit": app.limiter.limit, "url_ttl": app.url_ttl,
                                          "instructeurs": app.instructeurs})
            elif parts == ["reset"] and method == "POST":
                app.reset()
                self._send_json(200, {"reset": True})
            elif parts == ["mutations"] and method == "GET":
                wanted = parse_qs(urlsplit(self.path).query).get("dossier")
                with app.lock:
                    entries = [e for e in app.mutations if not wanted or str(e["dossier"]) == wanted[0]]
                    self._send_json(200, {"mutations": copy.deepcopy(entries)})
            elif parts == ["stats"] and method == "GET":
                with app.lock:
                    self._send_json(200, copy.deepcopy(app.stats))
            else:
                self._send_json(404, {"error": f"no control route for {method} {path}"})
        except (FixtureError, ValueError, TypeError, KeyError) as error:
            self._send_json(400, {"error": str(error)})

    def _control_dossier(self, number: int, options: dict) -> None:
        app = self.app
        if self.command == "GET":
            with app.lock:
                dossier = app.store.dossiers.get(number)
                view = public_view(dossier) if dossier is not None else None
            if view is None:
                self._send_json(404, {"error": f"no dossier {number}"})
            else:
                self._send_json(200, view)
            return
        reason = options.get("reason", "user_request")
        if reason not in app.schema.type_map["DeletedDossierReason"].values:
            raise FixtureError(f"unknown reason {reason!r}")
        when = parse_time(options["dateSupression"]) if options.get("dateSupression") else now()
        with app.lock:
            if number not in app.store.dossiers:
                self._send_json(404, {"error": f"no dossier {number}"})
                return
            record = app.store.delete(number, reason, when)
        self._send_json(200, {"deleted": number, "deletedDossier": public_view(record)})


class _Answered(Exception):
    """Raised once a handler has already sent its answer (e.g. a 400 on bad JSON)."""


# --------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Fake of the démarches-simplifiées GraphQL API v2, for tests.")
    parser.add_argument("--host", default=env("DSFAKE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("DSFAKE_PORT", "0")),
                        help="TCP port; 0 picks a free one (printed in the READY line)")
    parser.add_argument("--schema", default=env("DSFAKE_SCHEMA", str(DEFAULT_SCHEMA)),
                        help="DS's schema.graphql (default: <repo>/../shared/ds/schema.graphql)")
    parser.add_argument("--fixtures", default=env("DSFAKE_FIXTURES", str(DEFAULT_FIXTURES)))
    parser.add_argument("--token", action="append",
                        help="accepted API token (repeatable; default $DSFAKE_TOKEN or 'test-token')")
    parser.add_argument("--expired-token", action="append", default=[],
                        help="token that DS knows but that has expired: HTTP 401 (repeatable)")
    parser.add_argument("--unknown-token-status", type=int, choices=(401, 403), default=403,
                        help="status for a missing or unknown token (DS: 403)")
    parser.add_argument("--rate-limit", type=int, default=int(env("DSFAKE_RATE_LIMIT", "0")) or None,
                        help="requests per minute and token before 429 (DS: 400; default: off)")
    parser.add_argument("--url-ttl", type=int, default=DEFAULT_URL_TTL, help="file URL lifetime in seconds")
    parser.add_argument("--expired-status", type=int, choices=(401, 403), default=403,
                        help="status of an expired file URL (S3: 403, OpenStack Swift: 401)")
    parser.add_argument("--public-url", default=None,
                        help="base of the file URLs (default: http://<host>:<port>)")
    parser.add_argument("--instructeur", action="append",
                        help="instructeur id the mutations accept, besides those of the dossier's "
                             f"groupe instructeur (repeatable; default {DEFAULT_INSTRUCTEUR})")
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    options = parser.parse_args(argv)
    options.token = options.token or [env("DSFAKE_TOKEN", "test-token")]
    options.instructeur = options.instructeur or [DEFAULT_INSTRUCTEUR]
    return options


def serve(options: argparse.Namespace) -> None:
    app = App(options)
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((options.host, options.port), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    app.public_url = (options.public_url or f"http://{options.host}:{port}").rstrip("/")
    print(f"READY {port}", flush=True)
    log(f"listening on {app.public_url} with {len(app.store.dossiers)} dossiers from {options.fixtures}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    if not Path(options.schema).is_file():
        sys.exit(f"dsfake: schema not found at {options.schema} (use --schema or DSFAKE_SCHEMA)")
    import signal

    # Exit cleanly on SIGTERM, the signal a test harness sends to stop the fake.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(options)


if __name__ == "__main__":
    main()
