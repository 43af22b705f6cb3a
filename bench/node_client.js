// Node's http.Agent on the same workloads (bench/clients.py's table). Prints one JSON line.
const http = require('http');
const [workload, port, originBase] = [process.argv[2], +process.argv[3], +(process.argv[4] || process.argv[3])];
const W = {
  tiny: ['/tiny', 'GET', null, 50, 20000, 10, 1, true],
  '1mib': ['/1mib', 'GET', null, 10, 2000, 10, 1, true],
  post64k: ['/post', 'POST', Buffer.alloc(65536, 'p'), 50, 4000, 10, 1, true],
  no_keepalive: ['/tiny', 'GET', null, 10, 3000, 10, 1, false],
  wait10k: ['/tiny', 'GET', null, 10000, 20000, 10, 1, true],
  origins1k: ['/tiny', 'GET', null, 50, 20000, 10, 1000, true],
}[workload];
const [path, method, body, greenlets, requests, conns, origins, keepAlive] = W;
const agent = new http.Agent({keepAlive, maxSockets: conns, maxFreeSockets: conns});
let done = 0, bytes = 0, errors = 0;
function fetch(i, cb) {
  const p = origins === 1 ? port : originBase + (i % origins);
  const headers = keepAlive ? {} : {Connection: 'close'};
  if (body) headers['Content-Length'] = body.length;
  const req = http.request({host: '127.0.0.1', port: p, path, method, agent, headers}, (res) => {
    res.on('data', (c) => { bytes += c.length; });
    res.on('end', () => { if (res.statusCode === 200) done++; else errors++; cb(); });
  });
  req.on('error', () => { errors++; cb(); });
  req.end(body || undefined);
}
const per = Math.max(1, Math.floor(requests / greenlets));
const start = process.hrtime.bigint();
let running = greenlets;
for (let g = 0; g < greenlets; g++) {
  let i = 0;
  const next = () => {
    if (i >= per) {
      if (--running === 0) {
        const seconds = Number(process.hrtime.bigint() - start) / 1e9;
        console.log(JSON.stringify({requests: done, bytes, seconds, errors,
                                    rss_mib: process.memoryUsage().rss / 1048576}));
        agent.destroy();
      }
      return;
    }
    fetch(g * 7919 + i++, next);
  };
  next();
}
