"""``make loadtest``: start the counting server on 127.0.0.1:0, run locust headless with
``--processes 2``, and exit with locust's exit code (non-zero if a cap was exceeded or a request
failed). Usage: python loadtests/run.py [--users 200] [--time 30s] [--processes 2]"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--spawn-rate", type=int, default=100)
    parser.add_argument("--time", default="30s")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--compare-users", type=int, default=50, help="users of the AgentUser/FastHttpUser run")
    parser.add_argument("--compare-time", default="15s")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=ROOT)
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        port = int(server.stdout.readline())
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            os.path.join(HERE, "locustfile.py"),
            "--headless",
            "--processes",
            str(args.processes),
            "-u",
            str(args.users),
            "-r",
            str(args.spawn_rate),
            "-t",
            args.time,
            "--host",
            "http://127.0.0.1:%d" % port,
            "--only-summary",
            "--stop-timeout",
            "5",
        ]
        print("$ " + " ".join(cmd), flush=True)
        code = subprocess.call(cmd, env=env, timeout=600)
        if args.compare_users:
            code = compare(port, args, env) or code
        return code
    finally:
        server.stdin.close()
        server.wait(10)


def compare(port: int, args: argparse.Namespace, env: dict) -> int:
    """The same locustfile through AgentUser and FastHttpUser, one after the other, one process each,
    on the same server: req/s and failures (locust's stats), connections (the server's count)."""
    rows = []
    for cls in ("FastHttpUser", "AgentUser"):
        with tempfile.TemporaryDirectory() as tmp:
            prefix = os.path.join(tmp, "stats")
            cmd = [sys.executable, "-m", "locust", "-f", os.path.join(HERE, "compare.py"), "--headless"]
            cmd += ["-u", str(args.compare_users), "-r", str(args.compare_users), "-t", args.compare_time]
            cmd += ["--host", "http://127.0.0.1:%d" % port, "--only-summary", "--stop-timeout", "5", "--csv", prefix]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(cmd, env=dict(env, GA_COMPARE_CLASS=cls), timeout=600, capture_output=True, text=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            if not os.path.exists(prefix + "_stats.csv"):
                print(proc.stdout[-2000:] + proc.stderr[-2000:])
                return 1
            with open(prefix + "_stats.csv") as fh:
                total = [r for r in csv.DictReader(fh) if r["Name"] == "Aggregated"][0]
        with urllib.request.urlopen("http://127.0.0.1:%d/__stats" % port, timeout=5) as res:
            tags = json.loads(res.read())["tags"]
        conns = tags.get("compare/" + cls, {})
        count = int(total["Request Count"])
        cpu_us = 1e6 * cpu / count if count else float("nan")
        rows.append((cls, float(total["Requests/s"]), int(total["Failure Count"]), conns.get("connections", 0), cpu_us))
    print(
        "\nside by side (%d users, one connection each, %s each, same server and locustfile):"
        % (args.compare_users, args.compare_time)
    )
    print("%-14s %10s %9s %12s %14s" % ("user class", "req/s", "failures", "connections", "locust CPU us"))
    for cls, rps, failures, conns, cpu_us in rows:
        print("%-14s %10.0f %9d %12d %14.1f" % (cls, rps, failures, conns, cpu_us))
    # The counting server (one Python process) is what limits req/s here: both classes read within
    # a few per cent of each other, either way, run to run. The locust process's CPU time per
    # request (user + system, the whole process: locust's own stats and scheduling included) is
    # what each client costs, so "at least as fast" is judged on it.
    ratio = rows[1][1] / rows[0][1] if rows[0][1] else float("nan")
    cpu_ratio = rows[0][4] / rows[1][4] if rows[1][4] else float("nan")
    ok = cpu_ratio >= 1.0 and rows[1][2] == 0
    print("AgentUser / FastHttpUser req/s: %.2f (the server's limit)" % ratio)
    print(
        "FastHttpUser / AgentUser locust CPU per request: %.2f (%s)"
        % (cpu_ratio, "AgentUser at least as fast" if cpu_ratio >= 1.0 else "AgentUser SLOWER")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
