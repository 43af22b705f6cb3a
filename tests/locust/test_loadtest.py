"""A short headless locust run with --processes 2 (locust's distributed engine): the caps hold and
the run exits 0; with a deliberately wrong claimed cap, the same check makes it exit non-zero."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(extra_env, users=40, seconds="4s"):
    env = dict(os.environ, **extra_env)
    return subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "loadtests", "run.py"),
            "--users",
            str(users),
            "--time",
            seconds,
            "--processes",
            "2",
            "--compare-users",
            "0",  # the AgentUser / FastHttpUser comparison is make loadtest's, not the suite's
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_short_distributed_run_holds_caps():
    proc = run({})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "result: all caps held, no failed request" in out
    assert out.count("SharedAgent") >= 1 and "(all)" in out


def test_report_fails_when_a_cap_is_exceeded():
    proc = run({"GA_SHARED_CAP": "8", "GA_CLAIMED_CAP": "1"}, users=40)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "result: FAILED" in out
