"""python -m aicd.dev.demo_app --port P --track stable|canary --version V --config app.yaml [--app NAME]"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import uvicorn

from aicd.dev.demo_app import ConfigError, load_config
from aicd.dev.demo_app.app import create_app


def _exit_with_parent(parent: int) -> None:
    """Stop when the process that started us is gone, so a reconciler killed with SIGKILL leaves no
    orphaned demo apps behind (our own session shields us from its process group)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aicd.dev.demo_app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--track", choices=["stable", "canary"], required=True)
    parser.add_argument("--version", required=True, help="the version (artifact tag) this process runs")
    parser.add_argument("--config", type=Path, required=True, help="the version's app.yaml")
    parser.add_argument("--app", default=None, help="value of the `app` metrics label (default: config name)")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process dies")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"demo_app: {exc}", file=sys.stderr)
        return 2
    if args.exit_with_parent:
        _exit_with_parent(os.getppid())
    app = create_app(
        config, version=args.version, track=args.track, app_name=args.app or config.name or "demo"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
