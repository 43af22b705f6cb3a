// Open-loop latency for Node's http.Agent (bench/latency.py's method): node latency.js PORT RATE SECONDS
const http = require('http');
const [port, rate, seconds] = [+process.argv[2], +process.argv[3], +process.argv[4]];
const agent = new http.Agent({keepAlive: true, maxSockets: 10, maxFreeSockets: 10});
const now = () => Number(process.hrtime.bigint()) / 1e9;
const latencies = []; let errors = 0;
function fetch(scheduled, done) {
  const req = http.get({host: '127.0.0.1', port, path: '/tiny', agent}, (res) => {
    res.resume();
    res.on('end', () => { if (scheduled !== null) latencies.push(now() - scheduled); done(); });
  });
  req.on('error', () => { errors++; done(); });
}
// Warm-up before the clock, as the Python clients': all 10 connections open, and 2,000 requests
// through them (V8 compiles the hot paths; 20 one at a time left that, and 9 connects, to the
// timed run's first requests: its p99 was 100-300 ms at p50 0.08 ms).
const WARM = 2000;
let warm = 0, chainsDone = 0;
function chain() {
  if (warm++ < WARM) return fetch(null, chain);
  if (++chainsDone === 10) run();
}
for (let c = 0; c < 10; c++) chain();
function run() {
  const total = Math.floor(rate * seconds), interval = 1 / rate, start = now() + 0.05;
  let i = 0, finished = 0;
  const finish = () => {
    if (++finished < total) return;
    latencies.sort((a, b) => a - b);
    const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] * 1000;
    console.log(JSON.stringify({p50: at(0.5), p99: at(0.99), 'p99.9': at(0.999), max: latencies[latencies.length - 1] * 1000,
                                n: latencies.length, client: 'node', rate, errors, hog: false}));
    agent.destroy();
  };
  (function schedule() {
    while (i < total && start + i * interval <= now()) { fetch(start + i * interval, finish); i++; }
    if (i >= total) return;
    const wait = start + i * interval - now();
    if (wait > 0.0015) setTimeout(schedule, (wait - 0.001) * 1000); else setImmediate(schedule);
  })();
}
