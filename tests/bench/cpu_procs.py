#!/usr/bin/env python3
"""cpu_procs: the machine's CPU over a measured run, and where it went, for `make bench`.

    cpu_procs.py mark FILE     notes the cores' and every process's CPU time so far in FILE
    cpu_procs.py since FILE    prints, since the mark, how busy the cores were, the share the
                               hypervisor gave to other guests (steal), and each process
                               group's share of the cores:
                               "CPU 93% busy, 0% stolen (postgres/ptce_funding 53%, …)"

A group is a process's command name, except PostgreSQL's: its backends are grouped by the role
they are connected as (the cmdline "postgres: ptce_funding ptce 127.0.0.1(…) idle" groups as
"postgres/ptce_funding"), and its own processes (WAL writer, checkpointer…) as "postgres/server".
A process started after the mark counts from zero; one gone before the end cannot be read: what
the cores did beyond the processes read (pgbench's connections, a load generator that exited,
the kernel's own threads' interrupts) is the last group, "gone or unlisted".
Reads /proc only (Linux). Standard library only.
"""
import json
import os
import sys


def group(pid, comm):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except OSError:
        argv = []
    if comm != "postgres":
        # The kernel's name is cut at 15 characters ("ptce-instructio"); a script is named by
        # its file (dsfake.py, writeback_drain.py), the broker by its main class.
        if comm.startswith("python"):
            return next((os.path.basename(a) for a in argv if a.endswith(".py")), comm)
        if comm == "java" and "kafka.Kafka" in argv:
            return "kafka"
        return os.path.basename(argv[0]) if argv and argv[0] else comm
    words = argv[0].split() if argv else []
    # A backend's title: "postgres: ROLE DATABASE HOST(PORT) STATE"; the server's own processes:
    # "postgres: walwriter", "postgres: checkpointer", or the postmaster's own command line.
    if len(words) >= 4 and words[0] == "postgres:" and "(" in words[3]:
        return "postgres/" + words[1]
    return "postgres/server"


def cores_ticks():
    """The cores' time so far, from /proc/stat: busy (user, nice, system, irq, softirq), stolen,
    and in all (those, idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return {"busy": v[0] + v[1] + v[2] + v[5] + v[6], "steal": v[7], "total": sum(v)}


def snapshot():
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm is in parentheses and may hold spaces: the fields after it are split on the last ')'.
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        ticks = int(fields[11]) + int(fields[12])  # utime + stime
        procs[pid] = {"group": group(pid, comm), "ticks": ticks, "start": fields[19]}
    return procs


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("mark", "since"):
        sys.exit(__doc__)
    path = sys.argv[2]
    if sys.argv[1] == "mark":
        with open(path, "w") as f:
            json.dump({"cores": cores_ticks(), "procs": snapshot()}, f)
        return
    with open(path) as f:
        mark = json.load(f)
    used = {}
    for pid, p in snapshot().items():
        before = mark["procs"].get(pid)
        # The same pid with another start time is another process: it counts from zero.
        base = before["ticks"] if before and before["start"] == p["start"] else 0
        used[p["group"]] = used.get(p["group"], 0) + p["ticks"] - base
    now = cores_ticks()
    busy, steal, total = (now[k] - mark["cores"][k] for k in ("busy", "steal", "total"))
    total = max(total, 1)
    rest = busy - sum(used.values())
    shares = sorted(((t / total * 100, g) for g, t in used.items() if t > 0), reverse=True)
    listed = [f"{g} {s:.0f}%" for s, g in shares if s >= 1]
    if rest / total >= 0.01:
        listed.append(f"gone or unlisted {rest / total * 100:.0f}%")
    print(f"CPU {busy / total * 100:.0f}% busy, {steal / total * 100:.0f}% stolen"
          f" ({', '.join(listed) or 'nothing measurable'})")


if __name__ == "__main__":
    main()
