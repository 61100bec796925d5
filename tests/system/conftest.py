"""Shared fixtures of the system tests: the stack started by tests/run.sh, seen from outside.

Every test talks to the real services over HTTP on 127.0.0.1, reads PostgreSQL as the
administrator to count what was written, and may stop and restart services or the broker
through the project's own scripts.
"""
import json
import os
import subprocess
import time
import urllib.request

import psycopg
import pytest
import requests

ROOT = os.environ.get("PTCE_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the system tests through `make test`")
    return value


@pytest.fixture(scope="session")
def urls():
    return {
        "submission": _env("PTCE_URL_SUBMISSION"),
        "instruction": _env("PTCE_URL_INSTRUCTION"),
        "funding": _env("PTCE_URL_FUNDING"),
    }


@pytest.fixture(scope="session")
def admin_url():
    return _env("PTCE_ADMIN_DATABASE_URL")


@pytest.fixture()
def db(admin_url):
    """An autocommit connection as the database owner, for counting and arranging rows."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        yield conn


def sql(conn, query, *params):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else None


def partner_body(**overrides):
    """A sound partner deposit (POST /v1/dossiers), with top-level fields replaced."""
    body = {
        "carrier": {"siret": "73282932000074", "name": "X", "legal_form": "SCIC"},
        "territory": {"name": "Pays de Y", "region": "84"},
        "members": [
            {"name": "a", "siret": "73282932000074", "kind": "ess_enterprise"},
            {"name": "b", "kind": "other_enterprise"},
            {"name": "c", "kind": "local_authority"},
        ],
        "summary": "Un pôle territorial de coopération économique en émergence.",
        "legal_person_private": True,
        "prior_state_support": False,
        "main_document": {"filename": "d.pdf", "pages": 4},
    }
    body.update(overrides)
    return body


REGIONS = ["01", "02", "03", "04", "06", "11", "24", "27", "28", "32", "44", "52", "53", "75", "76",
           "84", "93", "94"]
ALL_REGIONS_ROLES = ("national_admin", "funding_officer", "dashboard")


class Keys:
    """Creates API keys with the project's admin command, as an operator would."""

    def __init__(self, admin_url):
        self.admin_url = admin_url
        self.binary = os.path.join(_env("PTCE_BUILD"), "ptce-admin")

    def _run(self, *args):
        out = subprocess.run([self.binary, *args], env={**os.environ, "PTCE_ADMIN_DATABASE_URL": self.admin_url},
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise AssertionError(f"ptce-admin {' '.join(args)} failed: {out.stderr}")
        return out.stdout.strip()

    def create(self, role, regions=None):
        """A key of role; without regions, every region ("all" where the role may have it)."""
        if regions is None:
            regions = "all" if role in ALL_REGIONS_ROLES else ",".join(REGIONS)
        return self._run("key", "create", "--role", role, "--label", "system-test", "--regions", regions)

    def revoke(self, token):
        return self._run("key", "revoke", token.split("_")[1])


@pytest.fixture(scope="session")
def keys(admin_url):
    return Keys(admin_url)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


class Stack:
    """Stops and starts parts of the running stack through deploy/local scripts."""

    def __init__(self):
        self.script = _env("PTCE_STACK")
        self.build = _env("PTCE_BUILD")

    def start_service(self, name, **extra_env):
        self._forget_if_dead(name)
        env = dict(os.environ)
        if extra_env:
            env["PTCE_SERVICE_ENV"] = env.get("PTCE_SERVICE_ENV", "") + " " + " ".join(
                f"{k}={v}" for k, v in extra_env.items())
        subprocess.run([self.script, "start-service", name, self.build], env=env, check=True, timeout=60)

    def stop_service(self, name):
        subprocess.run([self.script, "stop-service", name], check=True, timeout=60)

    def pid(self, name):
        with open(self._pid_file(name)) as f:
            return int(f.read().strip())

    @staticmethod
    def _pid_file(name):
        return os.path.join(_env("PTCE_STATE_DIR"), "services", f"{name}.pid")

    def log_path(self, name):
        return os.path.join(_env("PTCE_STATE_DIR"), "services", f"{name}.log")

    @staticmethod
    def process_alive(pid):
        """True for a live process; False when it is gone or a zombie (an exited service whose
        parent, here the init of the machine, never reaps it still answers kill -0)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def alive(self, name):
        try:
            return self.process_alive(self.pid(name))
        except (OSError, ValueError):
            return False

    def wait_exit(self, name, timeout=30.0):
        """Waits until the service's process has exited (or is a zombie); False on timeout."""
        pid = self.pid(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process_alive(pid):
                return True
            time.sleep(0.05)
        return False

    def _forget_if_dead(self, name):
        # stack.sh takes a pid file naming a zombie for a running service: drop it first.
        try:
            if not self.process_alive(self.pid(name)):
                os.remove(self._pid_file(name))
        except (OSError, ValueError):
            pass

    def kafka_running(self):
        return subprocess.run([os.path.join(ROOT, "deploy", "local", "kafka.sh"), "status"],
                              capture_output=True, timeout=30).returncode == 0

    def kafka(self, action):
        subprocess.run([os.path.join(ROOT, "deploy", "local", "kafka.sh"), action], check=True, timeout=120)

    # ---- replicas: replica 0 is the service of the methods above; K > 0 run beside it ----

    OFFSETS = {"submission": 1, "instruction": 2, "funding": 3}

    @staticmethod
    def _replica_file(name, k, ext):
        base = name if k == 0 else f"{name}.{k}"
        return os.path.join(_env("PTCE_STATE_DIR"), "services", f"{base}.{ext}")

    def replica_url(self, name, k):
        """stack.sh's port rule: PTCE_PORT_BASE + 10*K + 1, 2 or 3."""
        return f"http://127.0.0.1:{int(_env('PTCE_PORT_BASE')) + 10 * k + self.OFFSETS[name]}"

    def replica_pid(self, name, k):
        with open(self._replica_file(name, k, "pid")) as f:
            return int(f.read().strip())

    def replica_log_path(self, name, k):
        return self._replica_file(name, k, "log")

    def replica_alive(self, name, k):
        try:
            return self.process_alive(self.replica_pid(name, k))
        except (OSError, ValueError):
            return False

    def start_replica(self, name, k):
        """Starts replica K of a service (same database, same consumer group), waits until ready."""
        try:
            if not self.replica_alive(name, k):
                os.remove(self._replica_file(name, k, "pid"))
        except OSError:
            pass
        subprocess.run([self.script, "start-service", name, self.build, str(k)], check=True, timeout=60)

    def stop_replica(self, name, k):
        subprocess.run([self.script, "stop-service", name, str(k)], check=True, timeout=60)


@pytest.fixture(scope="session")
def stack():
    return Stack()


class DsFake:
    """The DS fake's control API."""

    def __init__(self, url):
        self.url = url

    def post(self, path, body):
        r = requests.post(self.url + path, json=body, timeout=10)
        r.raise_for_status()
        return r.json() if r.content else None

    def get(self, path):
        r = requests.get(self.url + path, timeout=10)
        r.raise_for_status()
        return r.json()

    def delete(self, path, body=None):
        r = requests.delete(self.url + path, json=body, timeout=10)
        r.raise_for_status()

    def faults(self, *faults):
        return self.post("/_control/faults", list(faults))

    def clear_faults(self):
        self.delete("/_control/faults")

    def stats(self):
        return self.get("/_control/stats")


@pytest.fixture()
def dsfake():
    fake = DsFake(_env("DSFAKE_URL"))
    fake.clear_faults()
    yield fake
    fake.clear_faults()


def wait_until(predicate, timeout=30.0, interval=0.2, what="condition"):
    """Polls predicate until it returns a truthy value; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def pytest_collection_modifyitems(items):
    """The contract fuzzing (test_contract_fuzz.py) runs last: the waves and dossiers it creates
    must not change what the other tests see."""
    items.sort(key=lambda item: item.path.name == "test_contract_fuzz.py")
