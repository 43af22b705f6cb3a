"""locust's own ``locust/test/test_fasthttp.py`` run twice: as written (FastHttpUser) and with the
class names changed to ``AgentUser`` / ``AgentSession``. locust's sdist does not ship its tests, so
this needs a locust source checkout (``git clone https://github.com/locustio/locust``):

    python tests/locust_fasthttp_suite/run.py /path/to/locust-checkout

Prints both pytest summaries; exits non-zero when AgentUser passes fewer tests than FastHttpUser.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

FILES = ("__init__.py", "testcases.py", "util.py", "mock_logging.py", "test_fasthttp.py")


def prepare(source: str, workdir: str) -> str:
    package = os.path.join(workdir, "locust_test")
    os.makedirs(package)
    for name in FILES:
        shutil.copy(os.path.join(source, "locust", "test", name), os.path.join(package, name))
    path = os.path.join(package, "testcases.py")
    text = open(path).read().replace("from locust.test.", "from .")
    open(path, "w").write(text)
    original = open(os.path.join(package, "test_fasthttp.py")).read()
    swapped = original.replace(
        "from locust import FastHttpUser\nfrom locust.contrib.fasthttp import FastHttpSession\n",
        "from geventagent.contrib.locust import AgentUser as FastHttpUser\n"
        "from geventagent.contrib.locust import AgentSession as FastHttpSession\n",
    )
    assert swapped != original, "test_fasthttp.py's imports changed: update this script"
    open(os.path.join(package, "test_agent_fasthttp.py"), "w").write(swapped)
    return package


def run(workdir: str, name: str) -> str:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:anyio", "-p", "no:cacheprovider", "-q", "-rf"]
    proc = subprocess.run(cmd + ["locust_test/" + name], cwd=workdir, capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    for line in lines:
        if line.startswith("FAILED "):
            print("    " + line)
    return lines[-1] if lines else proc.stderr[-500:]


def passed(summary: str) -> int:
    found = re.search(r"(\d+) passed", summary)
    return int(found.group(1)) if found else 0


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory(prefix="ga-locust-fasthttp-") as workdir:
        prepare(sys.argv[1], workdir)
        print("FastHttpUser:")
        stock = run(workdir, "test_fasthttp.py")
        print("  " + stock)
        print("AgentUser:")
        ours = run(workdir, "test_agent_fasthttp.py")
        print("  " + ours)
    return 0 if passed(ours) >= passed(stock) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
