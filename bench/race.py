"""The keep-alive race (seed 003, peers.md §3): the server closes an idle connection after exactly
T seconds, and clients reuse their sockets at T ± jitter. Counts failed requests per client, side
by side, in one run: geventagent, Node's http.Agent({keepAlive:true}) when `node` is installed,
urllib3 and requests (monkey-patched) and geventhttpclient.

    python bench/race.py [--t 0.05] [--jitter 0.004] [--workers 16] [--per-worker 125] [--json out.json]

All traffic goes to a loopback server (127.0.0.1, port 0) in its own process; every loop is
bounded. Exits non-zero if geventagent lost a request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PY_PRELUDE = """
from gevent import monkey
monkey.patch_all()
import json, random, sys, time, gevent
T, JITTER, WORKERS, PER, PORT = %(t)r, %(jitter)r, %(workers)d, %(per)d, %(port)d
URL = "http://127.0.0.1:%%d/" %% PORT
failures = {}
done = [0]

def record(exc):
    key = type(exc).__name__ + ": " + str(exc)[:60]
    failures[key] = failures.get(key, 0) + 1

def run(get):
    def worker(seed):
        rng = random.Random(seed)
        for _ in range(PER):
            try:
                get()
                done[0] += 1
            except Exception as exc:
                record(exc)
            gevent.sleep(T + rng.uniform(-JITTER, JITTER))
    jobs = [gevent.spawn(worker, i) for i in range(WORKERS)]
    gevent.joinall(jobs, timeout=WORKERS * PER * (T + JITTER) + 120)
"""

CLIENTS = {
    "geventagent": """
import geventagent as ga
agent = ga.Agent(keep_alive=True, max_sockets=WORKERS)
def get():
    assert agent.get(URL).read() == b"Hello World"
run(get)
extra = {"retries": agent.counters["retries"], "close_reasons": agent.close_reasons}
""",
    "geventagent (retry=False)": """
import geventagent as ga
agent = ga.Agent(keep_alive=True, max_sockets=WORKERS, retry=False)
def get():
    assert agent.get(URL).read() == b"Hello World"
run(get)
extra = {"close_reasons": agent.close_reasons}
""",
    "urllib3 (PoolManager defaults)": """
import urllib3
pool = urllib3.PoolManager(maxsize=WORKERS, block=True)
def get():
    r = pool.request("GET", URL)
    assert r.data == b"Hello World"
run(get)
extra = {}
""",
    "requests (Session defaults)": """
import requests
session = requests.Session()
adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=WORKERS, pool_block=True)
session.mount("http://", adapter)
def get():
    r = session.get(URL)
    assert r.content == b"Hello World"
run(get)
extra = {}
""",
    "geventhttpclient": """
from geventhttpclient import HTTPClient
client = HTTPClient("127.0.0.1", PORT, concurrency=WORKERS)
def get():
    r = client.get("/")
    body = r.read()
    r.release()
    assert body == b"Hello World"
run(get)
extra = {}
""",
}

PY_EPILOGUE = """
print(json.dumps({"ok": done[0], "failures": failures, "extra": extra}))
"""

NODE_CLIENT = """
const http = require('http');
const [T, JITTER, WORKERS, PER, PORT] = [%(t)r, %(jitter)r, %(workers)d, %(per)d, %(port)d];
const agent = new http.Agent({keepAlive: true, maxSockets: WORKERS});
let ok = 0; const failures = {};
function get(cb) {
  const req = http.get({host: '127.0.0.1', port: PORT, path: '/', agent}, (res) => {
    let body = ''; res.on('data', (c) => body += c);
    res.on('end', () => { if (body === 'Hello World') ok++; cb(); });
    res.on('error', (e) => { const k = e.code + ': ' + e.message; failures[k] = (failures[k] || 0) + 1; cb(); });
  });
  req.on('error', (e) => { const k = e.code + ': ' + e.message; failures[k] = (failures[k] || 0) + 1; cb(); });
}
let running = WORKERS;
for (let w = 0; w < WORKERS; w++) {
  let left = PER;
  const next = () => {
    if (left-- <= 0) {
      if (--running === 0) { console.log(JSON.stringify({ok, failures, extra: {}})); agent.destroy(); }
      return;
    }
    get(() => setTimeout(next, (T + (Math.random() * 2 - 1) * JITTER) * 1000));
  };
  next();
}
"""


def server_stats(port: int, path: str) -> dict:
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as res:
        body = res.read()
    return json.loads(body) if path == "/__stats" else {}


def run_client(name: str, params: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    if name == "node (http.Agent keepAlive)":
        cmd = ["node", "-e", NODE_CLIENT % params]
    else:
        code = textwrap.dedent(PY_PRELUDE % params) + textwrap.dedent(CLIENTS[name]) + PY_EPILOGUE
        cmd = [sys.executable, "-c", code]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--t", type=float, default=0.05, help="server keep-alive timeout (s)")
    parser.add_argument("--jitter", type=float, default=0.004)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--per-worker", type=int, default=125)
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", default=None, help="comma-separated client names")
    args = parser.parse_args()
    server_cmd = [sys.executable, "-m", "geventagent.testing", str(args.t), "--no-hint"]
    if shutil.which("taskset"):
        server_cmd = ["taskset", "-c", "1"] + server_cmd
    server = subprocess.Popen(
        server_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT)
    )
    port = int(server.stdout.readline())
    params = {"t": args.t, "jitter": args.jitter, "workers": args.workers, "per": args.per_worker, "port": port}
    names = list(CLIENTS)
    if shutil.which("node"):
        names.insert(2, "node (http.Agent keepAlive)")
    if args.only:
        names = [n for n in names if any(o.strip() in n for o in args.only.split(","))]
    total = args.workers * args.per_worker
    rows = []
    print(
        "keep-alive race: server closes idle connections after %.3f s; %d workers reuse at T +/- %.3f s; "
        "%d requests per client\n" % (args.t, args.workers, args.jitter, total)
    )
    print("%-32s %8s %8s %12s  %s" % ("client", "ok", "failed", "connections", "failure kinds"))
    try:
        for name in names:
            server_stats(port, "/__reset")
            result = run_client(name, params)
            stats = server_stats(port, "/__stats")
            if "error" in result:
                row = {"client": name, "ok": None, "failed": None, "error": result["error"]}
                print("%-32s %8s %8s %12s  %s" % (name, "-", "-", "-", "not run: %s" % result["error"][0][:70]))
            else:
                failed = sum(result["failures"].values())
                row = {
                    "client": name,
                    "ok": result["ok"],
                    "failed": failed,
                    "failures": result["failures"],
                    "connections": stats["connections_total"] - 1,
                    "extra": result["extra"],
                }
                kinds = "; ".join(
                    "%s x%d" % (k, v) for k, v in sorted(result["failures"].items(), key=lambda kv: -kv[1])
                )
                print("%-32s %8d %8d %12d  %s" % (name, result["ok"], failed, row["connections"], kinds[:90]))
            rows.append(row)
    finally:
        server.stdin.close()
        server.wait(10)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"params": params, "rows": rows}, fh, indent=2)
    ours = next((r for r in rows if r["client"] == "geventagent"), None)
    if ours is not None:
        print(
            "\ngeventagent: %d failed of %d (retries on stale sockets: %s)"
            % (ours["failed"] or 0, total, ours.get("extra", {}).get("retries"))
        )
        return 0 if ours["failed"] == 0 and ours["ok"] == total else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
