"""`python3 -m aicd.healthcheck [URL]`: the container image's HEALTHCHECK (exit 0 healthy, 1 not).

Asks URL, else $AICD_HEALTHCHECK_URL, else the worker's liveness endpoint on $AICD_METRICS_PORT (default
9464). `none` checks nothing (the poller serves no HTTP). Standard library only: it runs every 30 seconds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_METRICS_PORT = "9464"
TIMEOUT_S = 4.0


def health_url(argv: list[str], env: dict[str, str]) -> str:
    if argv:
        return argv[0]
    return (
        env.get("AICD_HEALTHCHECK_URL")
        or f"http://127.0.0.1:{env.get('AICD_METRICS_PORT') or DEFAULT_METRICS_PORT}/healthz"
    )


def main() -> int:
    url = health_url(sys.argv[1:], dict(os.environ))
    if url == "none":
        return 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # our own loopback endpoint
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
