"""The cap load test: AgentUser classes whose connection caps must hold under locust's own
distributed engine (``--processes``). Each worker process reports to the server at test stop;
the master prints the per-worker cap report and sets the exit code.

Caps (per worker process): ``PerUserAgent`` users have their own agent with ``max_sockets=1``;
``SharedAgent`` users share one agent per process with ``max_total_sockets=SHARED_CAP``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

from locust import between, events, task

import geventagent as ga
from geventagent.contrib.locust import AgentUser

SHARED_CAP = int(os.environ.get("GA_SHARED_CAP", "8"))
#: The cap the report checks against (tests lower it on purpose to prove the check can fail).
CLAIMED_CAP = int(os.environ.get("GA_CLAIMED_CAP", str(SHARED_CAP)))
SHARED = ga.Agent(keep_alive=True, max_sockets=SHARED_CAP, max_total_sockets=SHARED_CAP)
#: Cumulative per-process counts (a worker's own stats are reset each time it reports to the master).
COUNTS = {"requests": 0, "failures": 0, "PerUserAgent": 0, "SharedAgent": 0}
AGENTS = [SHARED]  # every agent of this process, for the close-reason summary


@events.request.add_listener
def count_request(exception=None, **_kw):
    COUNTS["requests"] += 1
    if exception is not None:
        COUNTS["failures"] += 1


class _Tagged(AgentUser):
    abstract = True
    wait_time = between(0.005, 0.02)
    timeout = 30.0

    def on_start(self) -> None:
        COUNTS[type(self).__name__] += 1
        if self.client.agent is not SHARED:
            AGENTS.append(self.client.agent)
        self.client.default_headers["X-Worker"] = "%d/%s" % (os.getpid(), type(self).__name__)

    @task
    def index(self) -> None:
        self.client.get("/")


class PerUserAgent(_Tagged):
    max_sockets = 1


class SharedAgent(_Tagged):
    agent = SHARED


@events.test_stop.add_listener
def report_worker(environment, **_kw):
    runner = environment.runner
    if runner is None or type(runner).__name__ == "MasterRunner":
        return
    report = {
        "tag": os.getpid(),
        "requests": COUNTS["requests"],
        "failures": COUNTS["failures"],
        "users": COUNTS["PerUserAgent"] + COUNTS["SharedAgent"],
        "users_per_user": COUNTS["PerUserAgent"],
        "users_shared": COUNTS["SharedAgent"],
        "sockets_created": sum(agent.counters["sockets_created"] for agent in AGENTS),
    }
    for agent in AGENTS:
        for reason, count in agent.close_reasons.items():
            report["close_" + reason] = report.get("close_" + reason, 0) + count
    query = "&".join("%s=%d" % item for item in report.items())
    try:
        urllib.request.urlopen(environment.host.rstrip("/") + "/__report?" + query, timeout=5).read()
    except OSError:
        pass


@events.quitting.add_listener
def cap_report(environment, **_kw):
    runner = environment.runner
    if runner is not None and type(runner).__name__ == "WorkerRunner":
        return
    expected = int(getattr(environment.parsed_options, "processes", 0) or 0)
    deadline = time.time() + 10
    while True:
        data = json.loads(urllib.request.urlopen(environment.host.rstrip("/") + "/__stats", timeout=5).read())
        if len(data["reports"]) >= max(expected, 1) or time.time() > deadline:
            break
        time.sleep(0.2)
    tags, reports = data["tags"], data["reports"]
    print(
        "\ncap report (per worker process; caps: PerUserAgent max_sockets=1 per user, "
        "SharedAgent max_total_sockets=%d per process)" % SHARED_CAP
    )
    print(
        "%-8s %-14s %6s %9s %9s %12s %6s %6s %s"
        % ("worker", "user class", "users", "requests", "failures", "connections", "peak", "cap", "held")
    )
    ok = True
    for pid in sorted(reports):
        report = reports[pid]
        for cls, users_key in (("PerUserAgent", "users_per_user"), ("SharedAgent", "users_shared")):
            stats = tags.get("%s/%s" % (pid, cls), {"connections": 0, "peak": 0, "requests": 0})
            if not report[users_key] and not stats["requests"]:
                continue
            cap = report[users_key] if cls == "PerUserAgent" else CLAIMED_CAP
            held = stats["peak"] <= cap
            ok = ok and held
            print(
                "%-8s %-14s %6d %9d %9s %12d %6d %6d %s"
                % (
                    pid,
                    cls,
                    report[users_key],
                    stats["requests"],
                    "",
                    stats["connections"],
                    stats["peak"],
                    cap,
                    "yes" if held else "NO",
                )
            )
        closes = ", ".join("%s %d" % (k[6:], v) for k, v in sorted(report.items()) if k.startswith("close_"))
        print(
            "%-8s %-14s %6d %9d %9d   sockets closed: %s"
            % (pid, "(all)", report["users"], report["requests"], report["failures"], closes or "none")
        )
        ok = ok and report["failures"] == 0 and report["requests"] > 0
    if len(reports) < max(expected, 1):
        print("missing worker reports: got %d of %d" % (len(reports), expected))
        ok = False
    total_failures = environment.stats.total.num_failures
    ok = ok and total_failures == 0
    print("result: %s" % ("all caps held, no failed request" if ok else "FAILED"))
    if not ok:
        environment.process_exit_code = 1
