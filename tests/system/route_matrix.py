"""The role × route matrix: who may call each route of each service, and who is told it does not exist.

Every route of every service is listed here, once. tests/system/test_route_matrix.py checks
this table against the services' own route tables (`ptce-<service> --routes`) and against the
`x-roles` of api-spec/openapi.yaml, and calls every route with a key of every role: a route
missing from this table, or a role answered otherwise than the table says, fails the test.

Each entry: (method, pattern, allowed roles, hidden roles).
  allowed  — the roles that pass the role check (PUBLIC: no key at all);
  hidden   — roles that get 404, as if the route did not exist for them (dashboard keys on every
             route that shows personal data: they see aggregates only);
  any other role gets 403.
"""

ROLES = ("national_admin", "regional_instructor", "expert", "funding_officer", "partner", "dashboard")
PUBLIC = "public"
READERS = frozenset({"national_admin", "regional_instructor", "expert", "funding_officer"})
FUNDING_OFFICERS = frozenset({"national_admin", "funding_officer"})
FUNDING_AGGREGATES = FUNDING_OFFICERS | {"dashboard"}
INSTRUCTION_STAFF = frozenset({"national_admin", "regional_instructor"})
INSTRUCTION_READERS = INSTRUCTION_STAFF | {"expert"}
DASHBOARD = frozenset({"dashboard"})

ROUTES = {
    "submission": [
        ("POST", "/v1/webhooks/ds/{token}", PUBLIC, frozenset()),
        ("POST", "/v1/dossiers", frozenset({"partner", "national_admin"}), frozenset({"dashboard"})),
        ("GET", "/v1/dossiers", READERS, frozenset({"dashboard"})),
        ("GET", "/v1/dossiers/{id}", READERS | {"partner"}, frozenset({"dashboard"})),
        ("GET", "/v1/dossiers/{id}/history", READERS | {"partner"}, frozenset({"dashboard"})),
        ("GET", "/v1/waves", READERS | {"partner", "dashboard"}, frozenset()),
        ("POST", "/v1/waves", frozenset({"national_admin"}), frozenset()),
    ],
    # Instruction: dashboards pass the role check of every route that shows a dossier and are
    # answered 404 there by the handler (aggregates only); experts see the dossiers asked of
    # them, after their declaration, and answer through their own requests.
    "instruction": [
        ("GET", "/v1/dossiers", INSTRUCTION_READERS, DASHBOARD),
        ("GET", "/v1/dossiers/{id}", INSTRUCTION_READERS, DASHBOARD),
        ("GET", "/v1/dossiers/{id}/history", INSTRUCTION_READERS, DASHBOARD),
        ("POST", "/v1/dossiers/{id}/transitions", INSTRUCTION_STAFF, DASHBOARD),
        ("POST", "/v1/dossiers/{id}/assignment", frozenset({"national_admin"}), DASHBOARD),
        ("PUT", "/v1/dossiers/{id}/regional-opinion", INSTRUCTION_STAFF, DASHBOARD),
        ("PUT", "/v1/dossiers/{id}/annotations/{key}", INSTRUCTION_STAFF, DASHBOARD),
        ("PUT", "/v1/dossiers/{id}/labels", INSTRUCTION_STAFF, DASHBOARD),
        ("POST", "/v1/dossiers/{id}/opinion-requests", INSTRUCTION_STAFF, DASHBOARD),
        ("GET", "/v1/dossiers/{id}/opinion-requests", INSTRUCTION_READERS, DASHBOARD),
        ("POST", "/v1/opinion-requests/{rid}/declaration", frozenset({"expert"}), DASHBOARD),
        ("PUT", "/v1/opinion-requests/{rid}/answer", frozenset({"expert"}), DASHBOARD),
        ("POST", "/v1/opinion-requests/{rid}/remind", INSTRUCTION_STAFF, DASHBOARD),
        ("POST", "/v1/opinion-requests/{rid}/revoke", INSTRUCTION_STAFF, DASHBOARD),
        ("POST", "/v1/dossiers/{id}/reviews", INSTRUCTION_READERS, DASHBOARD),
        ("GET", "/v1/rankings", INSTRUCTION_STAFF, DASHBOARD),
        ("POST", "/v1/waves/{wave}/decisions", frozenset({"national_admin"}), frozenset()),
        ("GET", "/v1/stats/funnel", INSTRUCTION_STAFF | {"dashboard"}, frozenset()),
        ("GET", "/v1/stats/delays", INSTRUCTION_STAFF | {"dashboard"}, frozenset()),
        ("GET", "/v1/exports/dossiers.csv", INSTRUCTION_STAFF, DASHBOARD),
    ],
    "funding": [
        # The bouquet of services and the charter (services/funding/support.c).
        ("GET", "/v1/support/actions", frozenset(ROLES), frozenset()),
        ("POST", "/v1/support/actions", frozenset({"national_admin"}), frozenset()),
        ("GET", "/v1/support/beneficiaries", frozenset({"national_admin", "funding_officer", "partner"}),
         frozenset()),
        ("GET", "/v1/support/beneficiaries/{dossier_id}",
         frozenset({"national_admin", "funding_officer", "partner"}), frozenset()),
        ("POST", "/v1/support/enrolments", frozenset({"partner"}), frozenset()),
        ("GET", "/v1/support/enrolments/{id}", frozenset({"national_admin", "funding_officer", "partner"}),
         frozenset()),
        ("POST", "/v1/support/enrolments/{id}/deliveries", frozenset({"partner"}), frozenset()),
        ("GET", "/v1/support/uptake", frozenset({"national_admin", "funding_officer", "dashboard"}),
         frozenset()),
        ("POST", "/v1/charter/signatures", frozenset({"national_admin", "funding_officer"}), frozenset()),
        ("GET", "/v1/charter/signatories", PUBLIC, frozenset()),
        ("GET", "/v1/envelopes", FUNDING_AGGREGATES, frozenset()),
        ("POST", "/v1/envelopes", FUNDING_OFFICERS, frozenset()),
        ("GET", "/v1/agreements", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("GET", "/v1/agreements/{id}", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("GET", "/v1/agreements/{id}/versions", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("GET", "/v1/agreements/{id}/reports", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("POST", "/v1/agreements/{id}/signatures", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("POST", "/v1/agreements/{id}/reductions", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("POST", "/v1/agreements/{id}/year3", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("POST", "/v1/tranches/{id}/payments", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("POST", "/v1/tranches/{id}/cancellation", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("POST", "/v1/tranches/{id}/recoveries", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("GET", "/v1/reports/overdue", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("GET", "/v1/reports/catalogue", FUNDING_AGGREGATES, frozenset()),
        ("POST", "/v1/reports/{id}/submission", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("POST", "/v1/reports/{id}/review", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("GET", "/v1/ledger", FUNDING_OFFICERS, frozenset({"dashboard"})),
        ("GET", "/v1/stats/money", FUNDING_AGGREGATES, frozenset()),
        ("GET", "/v1/opendata/subventions.csv", PUBLIC, frozenset()),
    ],
}

# The probes every service serves, without a key.
PROBES = [
    ("GET", "/healthz", PUBLIC, frozenset()),
    ("GET", "/readyz", PUBLIC, frozenset()),
    ("GET", "/metrics", PUBLIC, frozenset()),
]
