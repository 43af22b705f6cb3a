"""``make loadtest``: start the counting server on 127.0.0.1:0, run locust headless with
``--processes 2``, and exit with locust's exit code (non-zero if a cap was exceeded or a request
failed). Usage: python loadtests/run.py [--users 200] [--time 30s] [--processes 2]"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--spawn-rate", type=int, default=100)
    parser.add_argument("--time", default="30s")
    parser.add_argument("--processes", type=int, default=2)
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
        return subprocess.call(cmd, env=env, timeout=600)
    finally:
        server.stdin.close()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
