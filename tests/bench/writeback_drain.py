#!/usr/bin/env python3
"""writeback_drain: watches the DS fake drain a bulk decision's write-back, for `make bench`.

    writeback_drain.py DSFAKE_URL FIRST COUNT SECONDS START_EPOCH

Polls the fake's mutation log (GET /_control/mutations) once a second until the COUNT dossiers
numbered FIRST.. have each received a mutation, or SECONDS have passed since START_EPOCH (the
moment the decision was answered). The arrival times are the fake's own clock. Prints one line:
    mutations accepted first_to_last_s decision_to_last_s most_in_any_60s per_min rate_limited
where most_in_any_60s is the most mutations that arrived in any sliding 60 s window of the
observation (DS's limit: 400 requests a minute and token), per_min the mean rate between the
first and the last arrival, and rate_limited the 429 answers the fake gave (its own limiter runs
at DS's 400 a minute; any 429 means the sender went above it).
"""
import json
import sys
import time
import urllib.request


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)


def main():
    base, first, count, seconds, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        float(sys.argv[4]), float(sys.argv[5])
    wanted = set(range(first, first + count))
    while True:
        got = [m for m in get(base, "/_control/mutations")["mutations"] if m["dossier"] in wanted]
        if len({m["dossier"] for m in got}) >= count or time.time() - start >= seconds:
            break
        time.sleep(1)
    at = sorted(m["at"] for m in got)
    accepted = sum(1 for m in got if m.get("ok"))
    window = max((sum(1 for t in at if s <= t < s + 60) for s in at), default=0)
    span = at[-1] - at[0] if len(at) > 1 else 0.0
    per_min = 60 * (len(at) - 1) / span if span > 0 else 0.0
    limited = get(base, "/_control/stats").get("rate_limited", 0)
    print(len(at), accepted, f"{span:.1f}", f"{(at[-1] - start) if at else 0:.1f}", window,
          f"{per_min:.1f}", limited)


if __name__ == "__main__":
    main()
