// Node's http.Agent on the same workloads (bench/clients.py's table). Prints one JSON line.
const http = require('http');
const https = require('https');
const [workload, port, originBase] = [process.argv[2], +process.argv[3], +(process.argv[4] || process.argv[3])];
const W = {
  tiny: ['/tiny', 'GET', null, 50, 20000, 10, 1, true],
  '1mib': ['/1mib', 'GET', null, 10, 2000, 10, 1, true],
  post64k: ['/post', 'POST', Buffer.alloc(65536, 'p'), 50, 4000, 10, 1, true],
  no_keepalive: ['/tiny', 'GET', null, 10, 3000, 10, 1, false],
  wait10k: ['/tiny', 'GET', null, 10000, 100000, 10, 1, true],
  origins1k: ['/tiny', 'GET', null, 50, 20000, 10, 1000, true],
  https_tiny: ['/tiny', 'GET', null, 50, 10000, 10, 1, true],
  https_no_keepalive: ['/tiny', 'GET', null, 10, 1500, 10, 1, false],
}[workload];
if (!W) { console.error('n/a for node: ' + workload); process.exit(2); }
const [path, method, body, greenlets, requests, conns, origins, keepAlive] = W;
const TLS = workload.startsWith('https');
const lib = TLS ? https : http;
const agent = TLS
  ? new https.Agent({keepAlive, maxSockets: conns, maxFreeSockets: conns,
                     ca: require('fs').readFileSync(process.env.GA_BENCH_CA)})
  : new http.Agent({keepAlive, maxSockets: conns, maxFreeSockets: conns});
const tlsPort = TLS ? +process.env.GA_BENCH_TLS_PORT : 0;
let done = 0, bytes = 0, errors = 0;
// Greenlet g's i-th request: as in clients.py, g visits origins g, g+G, g+2G, ... so two
// loops never share an origin at once.
function fetch(g, i, cb) {
  const p = TLS ? tlsPort : (origins === 1 ? port : originBase + ((g + greenlets * i) % origins));
  const headers = keepAlive ? {} : {Connection: 'close'};
  if (body) headers['Content-Length'] = body.length;
  const req = lib.request({host: '127.0.0.1', port: p, path, method, agent, headers}, (res) => {
    res.on('data', (c) => { bytes += c.length; });
    res.on('end', () => { if (res.statusCode === 200) done++; else errors++; cb(); });
  });
  req.on('error', () => { errors++; cb(); });
  req.end(body || undefined);
}
const per = Math.max(1, Math.floor(requests / greenlets));
let start;
function timed() {
  start = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  let running = greenlets;
  for (let g = 0; g < greenlets; g++) {
    let i = 0;
    const next = () => {
      if (i >= per) {
        if (--running === 0) {
          const seconds = Number(process.hrtime.bigint() - start) / 1e9;
          const cpu = process.cpuUsage(cpu0);
          console.log(JSON.stringify({requests: done, bytes, seconds, errors,
                                      cpu_seconds: (cpu.user + cpu.system) / 1e6,
                                      rss_mib: process.memoryUsage().rss / 1048576}));
          agent.destroy();
        }
        return;
      }
      fetch(g, i++, next);
    };
    next();
  }
}
// Warm-up, as clients.py: one request per origin (at least 50), one after another; then the
// counters restart and the clock starts.
let w = 0;
const warm = Math.max(Math.min(greenlets, 50), origins);
(function warmup() {
  if (w >= warm) { done = 0; bytes = 0; errors = 0; timed(); return; }
  fetch(w++, 0, warmup);
})();
