"""A PostgreSQL restart under load costs only the requests under way, and /readyz never waits.

1. Under a light, bounded load of partner deposits and batched reads against submission, the
   cluster is restarted with `pg_ctl restart -m immediate` (every backend killed at once, crash
   recovery). Once submission's /readyz answers 200 again, no request may get a 503: the pool
   and the batch threads renew the connections the restart killed before handing them out, and
   a lost first statement (BEGIN, a read) is retried once. Every acknowledged deposit must be in
   the database, and readiness must come back within a few seconds of the server. Bursts of
   concurrent deposits before and after the restart take every connection the HTTP workers use:
   a light load alone only ever takes the few on top of the pool's free stack, and the broken
   ones below would wait there for the next rise in load (up to 26 s later, before this fix).
   /readyz, probed every 100 ms, must not fall back to 503 once it is 200 again.
2. With every backend of submission frozen (SIGSTOP: a server that accepts nothing and answers
   nothing), many concurrent /readyz probes answer at once from the checker thread's state, and
   do not delay /healthz: before, each probe held an HTTP worker on the pool (and waited 10 s).
"""
import os
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from conftest import _env, bearer, sql, wait_until
from test_http_bad_input import dumps, valid_body

CLIENTS = 4            # load threads, each one request at a time
BURST = 24             # concurrent deposits of a burst: more than the 8 HTTP workers, so that
                       # every connection the workers use is taken, not only the top of the pool
PAUSE_S = 0.02         # between two requests of a thread: ~100 requests/s in all, light
BEFORE_S = 2.0         # load before the restart
AFTER_READY_S = 5.0    # load after /readyz is back
READY_BACK_S = 5.0     # bound on server back -> /readyz 200 (checker period 0.5 s, stale 3 s)
RESTART_BOUND_S = 30.0  # bound on the whole outage seen by clients


def pg_ctl(*args):
    """Runs pg_ctl on the test cluster as its owner (postgres when the tests run as root)."""
    state = _env("PTCE_STATE_DIR")
    binary = os.path.join(os.environ.get("PTCE_PG_BIN", "/usr/lib/postgresql/15/bin"), "pg_ctl")
    cmd = [binary, *args, "-D", os.path.join(state, "pg", "data")]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, cwd="/", timeout=120, capture_output=True)


def readyz(url):
    try:
        return requests.get(url + "/readyz", timeout=2).status_code
    except requests.RequestException:
        return 0


class Load:
    """CLIENTS threads alternating a deposit and a read; every answer is kept with its time."""

    def __init__(self, url, token, read_id):
        self.url = url
        self.token = token
        self.read_id = read_id
        self.stop = threading.Event()
        self.results = []  # (started, finished, kind, status, dossier id or None)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(CLIENTS)]
        self.threads.append(threading.Thread(target=self.probe))

    def one(self, session, kind):
        started = time.monotonic()
        did = None
        try:
            if kind == "deposit":
                r = session.post(self.url + "/v1/dossiers", data=dumps(valid_body(summary="pg restart")),
                                 headers={**bearer(self.token), "Content-Type": "application/json",
                                          "Idempotency-Key": f"pg-restart-{uuid.uuid4()}"}, timeout=15)
                if r.status_code == 201:
                    did = r.json()["id"]
            elif kind == "readyz":
                r = session.get(self.url + "/readyz", timeout=15)
            else:
                r = session.get(f"{self.url}/v1/dossiers/{self.read_id}", headers=bearer(self.token),
                                timeout=15)
            status = r.status_code
        except requests.RequestException:
            status = 0  # refused or cut: counted with the failures
        with self.lock:
            self.results.append((started, time.monotonic(), kind, status, did))

    def burst(self):
        """BURST deposits at once, each on its own connection."""
        with ThreadPoolExecutor(max_workers=BURST) as pool:
            for f in [pool.submit(self.one, requests.Session(), "deposit") for _ in range(BURST)]:
                f.result()

    def probe(self):
        """/readyz every 100 ms: once back, it must not fall back to 503."""
        session = requests.Session()
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.one(session, "readyz")
            time.sleep(0.1)

    def run(self, i):
        session = requests.Session()
        deadline = time.monotonic() + 120  # bounded whatever happens
        k = i
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.one(session, "deposit" if k % 2 == 0 else "read")
            k += 1
            time.sleep(PAUSE_S)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def report(name, **figures):
    print(f"\n[pg-restart] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def test_restart_under_load_costs_no_request_once_ready(urls, db, keys, admin_url):
    url = urls["submission"]
    token = keys.create("partner")
    r = requests.post(url + "/v1/dossiers", data=dumps(valid_body(summary="pg restart seed")),
                      headers={**bearer(token), "Content-Type": "application/json",
                               "Idempotency-Key": f"pg-restart-{uuid.uuid4()}"}, timeout=10)
    assert r.status_code == 201, r.text
    seed = r.json()["id"]
    assert readyz(url) == 200

    with Load(url, token, seed) as load:
        load.burst()  # every connection the workers use is made before the restart
        time.sleep(BEFORE_S)
        t_restart = time.monotonic()
        pg_ctl("restart", "-m", "immediate", "-w", "-t", "60", "-l",
               os.path.join(_env("PTCE_STATE_DIR"), "pg", "postgresql.log"))
        t_server = time.monotonic()  # pg_ctl -w: the server accepts connections again
        # The first 200 from a check made after the server came back (the checker runs every
        # 0.5 s; an answer from before the restart could still be in its state for that long).
        wait_until(lambda: readyz(url) != 200 or time.monotonic() - t_server > 1.0, timeout=5,
                   interval=0.02, what="a readiness check after the restart")
        wait_until(lambda: readyz(url) == 200, timeout=RESTART_BOUND_S, interval=0.02,
                   what="submission /readyz 200 after the restart")
        t_ready = time.monotonic()
        for _ in range(3):  # the connections deeper in the pool are taken again too
            load.burst()
            time.sleep(AFTER_READY_S / 3)

    results = load.results
    failed_after = [(round(s - t_ready, 3), kind, st) for s, _, kind, st, _ in results
                    if s >= t_ready and st not in (200, 201)]
    failed_before = [r for r in results if r[0] < t_restart - 0.5 and r[3] not in (200, 201)]
    outage = [r for r in results
              if t_restart - 0.5 <= r[0] < t_ready and r[3] not in (200, 201) and r[2] != "readyz"]
    served_after = sum(1 for r in results if r[0] >= t_ready and r[3] in (200, 201) and r[2] != "readyz")
    acked = [did for *_, did in results if did]
    report("restart", requests=len(results), acked_deposits=len(acked),
           failed_during_outage=len(outage), failed_after_ready=len(failed_after),
           server_back_s=round(t_server - t_restart, 2),
           ready_after_server_s=round(t_ready - t_server, 2), served_after_ready=served_after)

    assert not failed_before, f"failures before the restart: {failed_before[:5]}"
    assert not failed_after, f"{len(failed_after)} failures once /readyz said 200: {failed_after[:10]}"
    assert served_after >= 50, f"the load did not go on after the restart ({served_after} answers)"
    assert t_ready - t_server < READY_BACK_S, f"/readyz took {t_ready - t_server:.2f} s after the server"
    # Failures only while the server was down, and only for requests under way or sent then.
    assert all(r[0] < t_server + READY_BACK_S for r in outage), outage
    # Nothing acknowledged is lost: every 201 is a row (the restart's crash recovery kept it).
    with psycopg.connect(admin_url, autocommit=True) as conn:
        found = sql(conn, "SELECT count(*) FROM submission.dossier WHERE id = ANY(%s::uuid[])", acked)[0][0]
    assert found == len(acked), f"{len(acked) - found} acknowledged deposits lost"
    # And the pool did renew what the restart killed, rather than hand it out.
    text = requests.get(url + "/metrics", timeout=5).text
    assert "ptce_db_pool_reconnects_total" in text


def backends(db, role):
    return [row[0] for row in sql(db, "SELECT pid FROM pg_stat_activity WHERE usename = %s", role)]


def test_readyz_never_holds_a_worker_while_the_database_hangs(urls, db):
    url = urls["submission"]
    assert readyz(url) == 200
    frozen = backends(db, "ptce_submission")
    assert frozen, "submission has no backend to freeze"
    probes = 32  # four times the HTTP workers (PTCE_HTTP_THREADS 8)
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)

        def timed(path):
            t0 = time.monotonic()
            try:
                code = requests.get(url + path, timeout=10).status_code
            except requests.RequestException:
                code = 0
            return code, time.monotonic() - t0

        with ThreadPoolExecutor(max_workers=probes + 4) as pool:
            ready = [pool.submit(timed, "/readyz") for _ in range(probes)]
            time.sleep(0.2)  # the probes are in: were they holding the workers, this would wait
            health = [pool.submit(timed, "/healthz") for _ in range(4)]
            ready = [f.result() for f in ready]
            health = [f.result() for f in health]
        # The checker's own ping is bounded (1 s, then a new connection): it is not stuck either,
        # and a probe is still answered at once.
        time.sleep(3.5)
        late = timed("/readyz")
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    report("frozen database", probes=probes, slowest_readyz_s=round(max(s for _, s in ready), 3),
           slowest_healthz_s=round(max(s for _, s in health), 3), late_readyz=late[0])
    assert all(code in (200, 503) for code, _ in ready), ready
    assert max(s for _, s in ready) < 1.0, ready
    assert all(code == 200 for code, _ in health), health
    assert max(s for _, s in health) < 1.0, health
    assert late[0] in (200, 503) and late[1] < 1.0, late
    wait_until(lambda: readyz(url) == 200, timeout=30, interval=0.1, what="ready again after SIGCONT")
