// __APP__: a small web app with the two endpoints a progressive delivery needs: /health (readiness) and
// /metrics (Prometheus text format; the canary analysis compares error rate and latency by `track`).
"use strict";
const http = require("http");

const APP = "__APP__";
const VERSION = process.env.VERSION || "dev"; // the image tag, set by the chart
const TRACK = process.env.TRACK || "stable"; // stable or canary, set by the chart
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, Infinity];
const requests = { "200": 0, "500": 0 };
const buckets = BUCKETS.map(() => 0);
let durationSum = 0;

function observe(code, seconds) {
  requests[code] = (requests[code] || 0) + 1;
  durationSum += seconds;
  BUCKETS.forEach((bound, i) => { if (seconds <= bound) buckets[i] += 1; });
}

function metrics() {
  const labels = `app="${APP}",version="${VERSION}",track="${TRACK}"`;
  const lines = ["# TYPE http_requests_total counter"];
  for (const [code, count] of Object.entries(requests)) {
    lines.push(`http_requests_total{${labels},code="${code}"} ${count}`);
  }
  lines.push("# TYPE http_request_duration_seconds histogram");
  BUCKETS.forEach((bound, i) => {
    const le = bound === Infinity ? "+Inf" : String(bound);
    lines.push(`http_request_duration_seconds_bucket{${labels},le="${le}"} ${buckets[i]}`);
  });
  lines.push(`http_request_duration_seconds_sum{${labels}} ${durationSum}`);
  lines.push(`http_request_duration_seconds_count{${labels}} ${buckets[buckets.length - 1]}`);
  return lines.join("\n") + "\n";
}

const server = http.createServer((req, res) => {
  const started = process.hrtime.bigint();
  const send = (code, body, type) => {
    res.writeHead(code, { "Content-Type": type, "X-Version": VERSION });
    res.end(body);
  };
  if (req.url === "/health") return send(200, "ok\n", "text/plain");
  if (req.url === "/metrics") return send(200, metrics(), "text/plain; version=0.0.4");
  send(200, JSON.stringify({ app: APP, version: VERSION }) + "\n", "application/json");
  observe("200", Number(process.hrtime.bigint() - started) / 1e9);
});

const port = Number(process.env.PORT || 8080);
server.listen(port, () => console.log(`${APP} ${VERSION} (${TRACK}) listening on :${port}`));
