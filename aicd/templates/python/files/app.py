"""__APP__: a small web app with the two endpoints a progressive delivery needs: /health (readiness) and
/metrics (Prometheus text format; the canary analysis compares error rate and latency by `track`)."""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP = "__APP__"
VERSION = os.environ.get("VERSION", "dev")  # the image tag, set by the chart
TRACK = os.environ.get("TRACK", "stable")  # stable or canary, set by the chart
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))

lock = threading.Lock()
requests_total: dict[str, int] = {"200": 0, "500": 0}
duration_buckets = [0] * len(BUCKETS)
duration_sum = 0.0


def observe(code: int, seconds: float) -> None:
    global duration_sum
    with lock:
        requests_total[str(code)] = requests_total.get(str(code), 0) + 1
        duration_sum += seconds
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                duration_buckets[index] += 1


def metrics() -> str:
    labels = f'app="{APP}",version="{VERSION}",track="{TRACK}"'
    lines = ["# TYPE http_requests_total counter"]
    with lock:
        for code, count in sorted(requests_total.items()):
            lines.append(f'http_requests_total{{{labels},code="{code}"}} {count}')
        lines.append("# TYPE http_request_duration_seconds histogram")
        for bound, count in zip(BUCKETS, duration_buckets, strict=True):
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'http_request_duration_seconds_bucket{{{labels},le="{le}"}} {count}')
        lines.append(f"http_request_duration_seconds_sum{{{labels}}} {duration_sum}")
        lines.append(f"http_request_duration_seconds_count{{{labels}}} {duration_buckets[-1]}")
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the standard library's method name
        started = time.perf_counter()
        if self.path == "/health":
            self._send(200, "ok\n", "text/plain")
        elif self.path == "/metrics":
            self._send(200, metrics(), "text/plain; version=0.0.4")
        else:
            self._send(200, f'{{"app": "{APP}", "version": "{VERSION}"}}\n', "application/json")
            observe(200, time.perf_counter() - started)

    def _send(self, code: int, body: str, content_type: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Version", VERSION)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # requests are counted, not logged
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    print(f"{APP} {VERSION} ({TRACK}) listening on :{port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
