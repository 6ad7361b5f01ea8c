"""The embedded stand-in for a cluster (target kind `local`), for `aicd dev` / `aicd demo` and tests.

- `reconciler.LocalReconciler`: follows the GitOps branch and runs the committed demo-app versions behind a
  traffic-splitting proxy per target (plays Argo CD + Argo Rollouts),
- `prometheus.EmbeddedPrometheus`: Debian's prometheus binary scraping those processes,
- `loadgen.LoadGenerator`: steady loopback traffic through the proxies, so the metrics have data,
- `processes` / `ports`: process-group and free-port helpers.

Submodules are imported explicitly (nothing here pulls in starlette or httpx).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` in one rename, so a reader (Prometheus file_sd, a parent process) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
