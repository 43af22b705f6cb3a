"""requests' own test suite (the sdist of the installed requests version), run twice on this
machine: stock, then with every Session through ``geventagent.contrib.requests.install()``.
Prints both counts; exits non-zero when the adapter passes more than ``--allowed`` (3) fewer tests
than stock requests (the differences are listed in the README).

    python tests/requests_suite/run.py [--allowed 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def fetch_sources(workdir: str) -> str:
    import requests

    version = requests.__version__
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            workdir,
            "requests==%s" % version,
        ],
        check=True,
    )
    archive = next(f for f in os.listdir(workdir) if f.endswith(".tar.gz"))
    with tarfile.open(os.path.join(workdir, archive)) as tar:
        tar.extractall(workdir, filter="data") if sys.version_info >= (3, 12) else tar.extractall(workdir)
    return os.path.join(workdir, "requests-%s" % version)


def run(source: str, with_adapter: bool) -> dict:
    cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "--timeout", "60", "-rf"]
    env = dict(os.environ)
    if with_adapter:
        cmd += ["-p", "ga_requests_plugin"]
        env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True, timeout=1800)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    counts = {key: int(n) for n, key in re.findall(r"(\d+) (passed|failed|skipped|error|errors|xfailed)", summary)}
    failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    return {"summary": summary, "passed": counts.get("passed", 0), "failed": failed}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--allowed", type=int, default=3, help="fewer passes than stock requests tolerated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ga-requests-suite-") as workdir:
        source = fetch_sources(workdir)
        stock = run(source, with_adapter=False)
        adapted = run(source, with_adapter=True)
    print("requests %s's own tests:" % os.path.basename(source).split("-")[-1])
    print("  stock requests:           %s" % stock["summary"])
    print("  through AgentAdapter:     %s" % adapted["summary"])
    only = sorted(set(adapted["failed"]) - set(stock["failed"]))
    print("  failing only through the adapter (%d):" % len(only))
    for name in only:
        print("    " + name)
    short = stock["passed"] - adapted["passed"]
    ok = adapted["passed"] > 0 and short <= args.allowed
    print("  %d fewer passes than stock (allowed %d): %s" % (short, args.allowed, "ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
