"""The keep-alive race (seed 003, peers.md §3), in two scenarios. Counts failed requests per
client, side by side, in one run: geventagent, Node's http.Agent({keepAlive:true}) when `node` is
installed, urllib3 and requests (monkey-patched) and geventhttpclient.

- ``idle``: the server closes an idle connection after exactly T seconds, and 16 workers reuse
  their sockets at T ± jitter (each worker has a connection of its own).
- ``saturated``: 200 workers make requests back to back through 4 connections, so a connection is
  handed from one request to the next queued one, and the server closes each connection without a
  word after every 5 responses (a per-connection request limit) as well as after T idle.

    python bench/race.py [--scenario idle,saturated] [--t 0.05] [--jitter 0.004] [--json out.json]

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
T, JITTER, WORKERS, PER, PORT, CONNS, PAUSE = %(t)r, %(jitter)r, %(workers)d, %(per)d, %(port)d, %(conns)d, %(pause)r
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
            gevent.sleep(T + rng.uniform(-JITTER, JITTER) if PAUSE else 0)
    jobs = [gevent.spawn(worker, i) for i in range(WORKERS)]
    gevent.joinall(jobs, timeout=WORKERS * PER * (T + JITTER) + 120)
"""

CLIENTS = {
    "geventagent": """
import geventagent as ga
agent = ga.Agent(keep_alive=True, max_sockets=CONNS)
def get():
    assert agent.get(URL).read() == b"Hello World"
run(get)
extra = {"retries": agent.counters["retries"], "redispatched": agent.counters["redispatched"],
         "close_reasons": agent.close_reasons}
""",
    "geventagent (retry=False)": """
import geventagent as ga
agent = ga.Agent(keep_alive=True, max_sockets=CONNS, retry=False)
def get():
    assert agent.get(URL).read() == b"Hello World"
run(get)
extra = {"close_reasons": agent.close_reasons}
""",
    "urllib3 (PoolManager defaults)": """
import urllib3
pool = urllib3.PoolManager(maxsize=CONNS, block=True)
def get():
    r = pool.request("GET", URL)
    assert r.data == b"Hello World"
run(get)
extra = {}
""",
    "requests (Session defaults)": """
import requests
session = requests.Session()
adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=CONNS, pool_block=True)
session.mount("http://", adapter)
def get():
    r = session.get(URL)
    assert r.content == b"Hello World"
run(get)
extra = {}
""",
    "geventhttpclient": """
from geventhttpclient import HTTPClient
client = HTTPClient("127.0.0.1", PORT, concurrency=CONNS)
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
const [CONNS, PAUSE] = [%(conns)d, %(pause)d];
const agent = new http.Agent({keepAlive: true, maxSockets: CONNS});
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
    get(() => setTimeout(next, PAUSE ? (T + (Math.random() * 2 - 1) * JITTER) * 1000 : 0));
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


SCENARIOS = {
    # name: (workers, requests per worker, connections, pause between a worker's requests, close after N)
    "idle": (16, 125, 16, 1, 0),
    "saturated": (200, 10, 4, 0, 5),
}


def run_scenario(scenario: str, args: argparse.Namespace, names: list) -> list:
    workers, per, conns, pause, close_after = SCENARIOS[scenario]
    server_cmd = [sys.executable, "-m", "geventagent.testing", str(args.t), "--no-hint"]
    if close_after:
        server_cmd += ["--close-after", str(close_after)]
    if shutil.which("taskset"):
        server_cmd = ["taskset", "-c", "1"] + server_cmd
    server = subprocess.Popen(
        server_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT)
    )
    port = int(server.stdout.readline())
    params = {
        "t": args.t,
        "jitter": args.jitter,
        "workers": workers,
        "per": per,
        "port": port,
        "conns": conns,
        "pause": pause,
    }
    total = workers * per
    rows = []
    if scenario == "idle":
        print(
            "\n[idle] the server closes idle connections after %.3f s; %d workers reuse at T +/- %.3f s; "
            "%d requests per client" % (args.t, workers, args.jitter, total)
        )
    else:
        print(
            "\n[saturated] %d workers back to back through %d connections (sockets handed from one request "
            "to the next); the server closes each connection without a word after %d responses and after "
            "%.3f s idle; %d requests per client" % (workers, conns, close_after, args.t, total)
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
            row["scenario"] = scenario
            row["total"] = total
            rows.append(row)
    finally:
        server.stdin.close()
        server.wait(10)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", default="idle,saturated", help="comma-separated: idle, saturated")
    parser.add_argument("--t", type=float, default=0.05, help="server keep-alive timeout (s)")
    parser.add_argument("--jitter", type=float, default=0.004)
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", default=None, help="comma-separated client names")
    args = parser.parse_args()
    names = list(CLIENTS)
    if shutil.which("node"):
        names.insert(2, "node (http.Agent keepAlive)")
    if args.only:
        names = [n for n in names if any(o.strip() in n for o in args.only.split(","))]
    rows = []
    for scenario in args.scenario.split(","):
        rows += run_scenario(scenario.strip(), args, names)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"scenarios": SCENARIOS, "rows": rows}, fh, indent=2)
    lost = False
    for row in rows:
        if row["client"] == "geventagent":
            print(
                "geventagent [%s]: %d failed of %d (retries: %s, redispatched: %s)"
                % (
                    row["scenario"],
                    row["failed"] or 0,
                    row["total"],
                    row.get("extra", {}).get("retries"),
                    row.get("extra", {}).get("redispatched"),
                )
            )
            lost = lost or row["failed"] != 0 or row["ok"] != row["total"]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
