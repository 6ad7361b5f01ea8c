"""The dashboard as a process of the embedded stack (`aicd dev`, `aicd demo`): `aicd dashboard` on
loopback, against the stack's Temporal, readable by anyone who can reach loopback, with sign-in by a token
from a file in the state directory (made once, readable by its owner only; no default token exists)."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from aicd.dashboard.settings import READ_ENV, TOKENS_FILE_ENV
from aicd.dev.ports import LOOPBACK, bind_socket, wait_http_ok
from aicd.dev.processes import ManagedProcess
from aicd.dev.temporal import EmbeddedTemporal, start_service

DEFAULT_PORT = 8090
TOKENS_FILE = "dashboard-tokens.yaml"


class DashboardStartError(RuntimeError):
    pass


def ensure_token(path: Path, identity: str) -> str:
    """The sign-in token of `identity` in the tokens file at `path`, added (random) when it has none."""
    tokens: dict[str, str] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        tokens = {str(key): str(value) for key, value in loaded.items()} if isinstance(loaded, dict) else {}
    if identity not in tokens or tokens[identity].startswith("sha256:"):
        tokens[identity] = secrets.token_urlsafe(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write("# Dashboard sign-in tokens (identity: token), made by aicd for the embedded stack.\n")
            yaml.safe_dump(tokens, out, default_flow_style=False)
    return tokens[identity]


def start_dashboard(
    state_dir: Path, temporal_address: str, namespace: str, *, port: int | None = None, timeout: float = 30.0
) -> tuple[ManagedProcess, str]:
    """Start `aicd dashboard` for the stack (log in `<state>/logs/dashboard.log`); returns it and its URL.
    `port`: None = 8090 if free, else any free port. The socket is bound here and inherited by the child:
    checking a port free and letting the child bind it later races with other processes, and the health
    check could then be answered by someone else's server."""
    sock = _listening_socket(port)
    chosen = sock.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("TEMPORAL_")}
    env.update(
        {
            "TEMPORAL_ADDRESS": temporal_address,
            "TEMPORAL_NAMESPACE": namespace,
            TOKENS_FILE_ENV: str(Path(state_dir).resolve() / TOKENS_FILE),
            READ_ENV: "anyone",
        }
    )
    argv = [sys.executable, "-m", "aicd", "dashboard", "--host", LOOPBACK, "--port", str(chosen)]
    argv += ["--fd", str(sock.fileno())]
    try:
        process = start_service("dashboard", argv, state_dir, env=env, pass_fds=[sock.fileno()])
    finally:
        sock.close()  # the child holds its own copy
    url = f"http://{LOOPBACK}:{chosen}"
    if not wait_http_ok(f"{url}/healthz", timeout=timeout):
        process.stop()
        raise DashboardStartError(
            f"the dashboard did not answer on {url} within {timeout:.0f}s (log {process.log_path})"
        )
    return process, url


def _listening_socket(port: int | None) -> socket.socket:
    if port:
        return bind_socket(LOOPBACK, port)
    try:
        return bind_socket(LOOPBACK, DEFAULT_PORT)
    except OSError:
        return bind_socket(LOOPBACK, 0)


@dataclass
class EmbeddedDashboard:
    process: ManagedProcess
    url: str
    identity: str  # who the token signs in
    token: str = field(repr=False)
    tokens_file: Path = Path()

    def stop(self) -> None:
        self.process.stop()


def start_embedded(temporal: EmbeddedTemporal, identity: str) -> EmbeddedDashboard:
    """The dashboard of an embedded stack whose Temporal runs, with a sign-in token for `identity` in
    `<state>/dashboard-tokens.yaml`."""
    tokens_file = temporal.state_dir / TOKENS_FILE
    token = ensure_token(tokens_file, identity)
    process, url = start_dashboard(temporal.state_dir, temporal.address, temporal.namespace)
    return EmbeddedDashboard(process, url, identity, token, tokens_file)
