#!/usr/bin/env python3
"""compose_check: structural checks of docker-compose.yml that no schema knows about.

The compose-spec schema (checked by dclint in tools/lint.sh) says whether the file is a valid
Compose file; this says whether it runs *this* project: dependencies exist and can be waited
for, each service gets the configuration its code reads (the PTCE_* tables of common/service.c
and of each service's main.c), listens where its healthcheck and published port look, and
uses its own database role.

usage: compose_check.py [ROOT]   (exit 1 and one line per problem when something is wrong)
"""
import os
import re
import sys

import yaml

SERVICES = {"submission": 8081, "instruction": 8082, "funding": 8083}
# Read by ptce-admin (tools/ptce_admin.c), not by a service's config table.
ADMIN_VARS = {"PTCE_ADMIN_DATABASE_URL", "PTCE_DB_PASSWORD_SUBMISSION",
              "PTCE_DB_PASSWORD_INSTRUCTION", "PTCE_DB_PASSWORD_FUNDING"}


def config_vars(root, *paths):
    """The PTCE_* names declared in config_var tables ({"PTCE_…", CONFIG_…) of C files."""
    names = set()
    for path in paths:
        with open(os.path.join(root, path), encoding="utf-8") as f:
            names |= set(re.findall(r'\{\s*"(PTCE_[A-Z0-9_]+)",\s*CONFIG_', f.read()))
    return names


def check(root):
    with open(os.path.join(root, "docker-compose.yml"), encoding="utf-8") as f:
        doc = yaml.safe_load(f)  # resolves the <<: merge keys
    services = doc.get("services") or {}
    common = config_vars(root, "common/service.c")
    problems = []

    def problem(name, text):
        problems.append(f"docker-compose.yml: service {name}: {text}")

    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            if dep not in services:
                problem(name, f"depends on unknown service {dep}")
                continue
            cond = spec.get("condition") if isinstance(spec, dict) else None
            if cond == "service_healthy" and "healthcheck" not in services[dep]:
                problem(name, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
            if cond == "service_completed_successfully" and \
                    str(services[dep].get("restart", "no")) != "no":
                problem(name, f"waits for {dep} to complete, but {dep} restarts")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        command = svc.get("command") or []
        binary = command[0] if command else ""
        if binary == "ptce-admin":
            for var in env:
                if var.startswith("PTCE_") and var not in ADMIN_VARS:
                    problem(name, f"{var} is not read by ptce-admin")
            continue
        if not binary.startswith("ptce-"):
            continue
        service = binary[len("ptce-"):]
        if service not in SERVICES:
            problem(name, f"runs {binary}, which the image does not have")
            continue
        known = common | config_vars(root, f"services/{service}/main.c")
        for var in env:
            if var.startswith("PTCE_") and var not in known:
                problem(name, f"{var} is not a configuration variable of {binary}")
        for var in ("PTCE_DATABASE_URL", "PTCE_KAFKA_BROKERS"):
            if not env.get(var):
                problem(name, f"{var} is required and not set")
        if env.get("PTCE_HTTP_BIND") != "0.0.0.0":
            problem(name, "PTCE_HTTP_BIND must be 0.0.0.0 inside a container")
        port = int(env.get("PTCE_HTTP_PORT") or SERVICES[service])
        if not re.match(rf"postgresql://ptce_{service}:", str(env.get("PTCE_DATABASE_URL", ""))):
            problem(name, f"PTCE_DATABASE_URL must use the role ptce_{service}")
        test = " ".join(str(t) for t in (svc.get("healthcheck") or {}).get("test", []))
        if f":{port}/readyz" not in test:
            problem(name, f"the healthcheck must call /readyz on port {port}")
        published = [str(p).rsplit(":", 1)[-1] for p in svc.get("ports") or []]
        if str(port) not in published:
            problem(name, f"port {port} is not published")
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    problems = check(root)
    for p in problems:
        print(p)
    print(f"docker-compose.yml: {len(problems)} structural problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
