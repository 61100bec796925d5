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
    # Instruction and funding add their routes here, as they are built.
    "instruction": [],
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
    ],
}

# The probes every service serves, without a key.
PROBES = [
    ("GET", "/healthz", PUBLIC, frozenset()),
    ("GET", "/readyz", PUBLIC, frozenset()),
    ("GET", "/metrics", PUBLIC, frozenset()),
]
