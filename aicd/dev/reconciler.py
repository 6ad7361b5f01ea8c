"""The `local` target's reconciler: plays Argo CD + Argo Rollouts for demo apps on this machine.

It follows one branch of the GitOps repo (polls the head every `poll_interval`, and on `POST /sync`), reads
each local target's values file at the head and makes the running processes match it:

- the stable version (`image.tag`) always runs,
- the canary version (`canary.tag`) runs while `canary.weight` > 0 and the canary tag differs from stable,
- a per-target proxy on a fixed port splits requests between them by the committed weight.

Like a Deployment rollout, a version change starts the new process first and swaps it in only once its
`/health` answers 200; an unhealthy release therefore never takes traffic and the target reports it.
Because it only ever applies the branch head, a manual revert commit is applied like any other commit.

Embedding (what `aicd dev` / `aicd demo` do):

    with LocalReconciler(gitops_repo, "main", targets, artifacts_root, state_dir, sd_file=prom.sd_file) as rec:
        rec.url             # http://127.0.0.1:PORT, the loopback API (AICD_RECONCILER_URL)
        rec.proxy_urls()    # {target: "http://127.0.0.1:PORT"}, where the load generator sends traffic

Stand-alone:

    python -m aicd.dev.reconciler --gitops REPO --branch B --targets FILE.json --artifacts DIR \
        --state DIR --port P [--sd-file FILE]

API (loopback only): `GET /targets`, `GET /targets/{name}[?revision=SHA]`, `POST /targets` (register),
`POST /sync {"target": T, "revision": SHA}`.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aicd.dev import write_atomic
from aicd.dev.demo_app import CONFIG_FILE
from aicd.dev.ports import LOOPBACK, bind_socket, free_port
from aicd.dev.processes import ManagedProcess
from aicd.dev.proxy import RunningServer, create_proxy_app, start_server
from aicd.network import is_loopback
from aicd.yamledit import get_path, parse_path

log = logging.getLogger("aicd.dev.reconciler")

ROLES = ("stable", "canary", "preview", "previous")
BLUE_GREEN_ROLES = frozenset(
    {"stable", "preview", "previous"}
)  # roles a blue-green switch moves processes between


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ValueKeys:
    """Write paths in the values file (what the engine writes, aicd.yamledit syntax; configurable in the
    spec). canary and weight None: the file has no canary, only the stable version runs."""

    image: str = "image.tag"
    canary: str | None = "canary.tag"
    weight: str | None = "canary.weight"
    # Blue-green: the preview (its own port, no live traffic) and the previous version kept warm after a switch.
    preview: str | None = "preview.tag"
    previous: str | None = "previous.tag"


@dataclass(frozen=True)
class LocalTarget:
    name: str
    path: str  # values file path inside the GitOps repo
    app: str | None = None  # `app` metrics label; default: the artifact's app.yaml `name`, else "demo"
    port: int = 0  # proxy port; 0 = pick a free one (remembered in the state dir across restarts)
    keys: ValueKeys = field(default_factory=ValueKeys)

    @classmethod
    def from_config(cls, name: str, config: str | Mapping[str, Any]) -> LocalTarget:
        """From a targets-file entry: a bare path, or {path, app?, port?, keys?: {image?, canary?, weight?}}."""
        if isinstance(config, str):
            return cls(name=name, path=config)
        if not isinstance(config, Mapping):
            raise ValueError(f"target {name}: expected a path or a mapping, got {type(config).__name__}")
        path = config.get("path")
        if not isinstance(path, str) or not path.strip("/"):
            raise ValueError(f"target {name}: `path` (values file in the GitOps repo) is required")
        port = config.get("port", 0) or 0
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"target {name}: `port` must be a port number, got {port!r}")
        app = config.get("app")
        if app is not None and not isinstance(app, str):
            raise ValueError(f"target {name}: `app` must be a string, got {app!r}")
        raw_keys = config.get("keys") or {}
        if not isinstance(raw_keys, Mapping) or not all(
            k in ("image", "canary", "weight", "preview", "previous")
            and (isinstance(v, str) or (v is None and k != "image"))
            for k, v in raw_keys.items()
        ):
            raise ValueError(
                f"target {name}: `keys` may only set image/canary/weight/preview/previous to write paths"
            )
        for key, text in raw_keys.items():
            if text is not None:
                try:
                    parse_path(text)
                except ValueError as error:
                    raise ValueError(f"target {name}: keys.{key}: {error}") from None
        return cls(name=name, path=path.strip("/"), app=app, port=port, keys=ValueKeys(**dict(raw_keys)))


def load_targets_file(path: Path) -> list[LocalTarget]:
    """`{"name": "values/path.yaml" | {...}}`, optionally wrapped as `{"targets": {...}}`."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("targets"), dict):
        data = data["targets"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping target names to values file paths")
    return [LocalTarget.from_config(name, cfg) for name, cfg in data.items()]


@dataclass(frozen=True)
class Desired:
    """What one values file asks to run."""

    stable: str
    canary: str | None  # None: no canary process
    weight: int  # percent of requests to the canary (0 when there is none)
    preview: str | None = None  # blue-green: served on the target's preview port only
    previous: str | None = None  # blue-green: the version switched away from, kept warm, no traffic


def parse_values(text: str, keys: ValueKeys = ValueKeys()) -> Desired:
    """Read the desired versions from a values file; ValueError says what is wrong."""
    try:
        # BaseLoader keeps every scalar a string: a short SHA such as 1234567 or 1e10000 stays the tag it is.
        data = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from exc
    stable = get_path(data, keys.image)
    if not isinstance(stable, str) or not stable:
        raise ValueError(f"no `{keys.image}` (the stable version) in the values file")
    blue_green = {
        role: version
        for role, key in (("preview", keys.preview), ("previous", keys.previous))
        if key is not None
        and isinstance(version := get_path(data, key), str)
        and version not in ("", "~", "null", stable)
    }
    if keys.canary is None or keys.weight is None:
        return Desired(stable=stable, canary=None, weight=0, **blue_green)
    canary = get_path(data, keys.canary)
    if canary is not None and (not isinstance(canary, str) or not canary or canary in ("~", "null")):
        canary = None
    raw_weight = get_path(data, keys.weight)
    weight = 0
    if raw_weight not in (None, "", "~", "null"):
        try:
            weight = round(float(raw_weight))
        except (TypeError, ValueError):
            raise ValueError(f"`{keys.weight}` must be a number 0..100, got {raw_weight!r}") from None
        if not 0 <= weight <= 100:
            raise ValueError(f"`{keys.weight}` must be within 0..100, got {weight}")
    if canary is None or canary == stable or weight == 0:
        return Desired(stable=stable, canary=None, weight=0, **blue_green)
    return Desired(stable=stable, canary=canary, weight=weight, **blue_green)


# ----------------------------------------------------------------------------------------------- git


class GitOpsSource:
    """Reads the GitOps branch: a local repository path directly, anything else through a bare mirror."""

    def __init__(self, repo: str, branch: str, mirror_dir: Path) -> None:
        self.repo = repo
        self.branch = branch
        self._local = Path(repo).is_dir()
        self._git_dir = Path(repo) if self._local else mirror_dir
        self._contains_cache: dict[tuple[str, str], bool] = {}
        self._env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}

    def _git(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(self._git_dir), *args],
            capture_output=True,
            text=True,
            env=self._env,
            check=check,
            timeout=60,
        )

    def head(self) -> str | None:
        """The branch head now; None when the branch does not exist (yet)."""
        ref = f"refs/heads/{self.branch}"
        if self._local:
            out = self._git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
            return out.stdout.strip() or None
        listed = subprocess.run(
            ["git", "ls-remote", self.repo, ref], capture_output=True, text=True, env=self._env, timeout=60
        )
        if listed.returncode != 0:
            raise RuntimeError(f"git ls-remote {self.repo} failed: {listed.stderr.strip()}")
        sha = listed.stdout.split()[0] if listed.stdout.strip() else None
        if sha and self._git("cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
            if not (self._git_dir / "HEAD").exists():
                subprocess.run(["git", "init", "-q", "--bare", str(self._git_dir)], check=True, env=self._env)
            self._git("fetch", "-q", "--no-tags", self.repo, f"+{ref}:{ref}", check=True)
        return sha

    def show(self, revision: str, path: str) -> str | None:
        """The file's content at `revision`; None when it does not exist there."""
        out = self._git("show", f"{revision}:{path}")
        return out.stdout if out.returncode == 0 else None

    def contains(self, revision: str, head: str) -> bool:
        """Whether commit `revision` is `head` or one of its ancestors (False for unknown commits)."""
        key = (revision, head)
        if key not in self._contains_cache:
            if revision == head:
                return True
            out = self._git("merge-base", "--is-ancestor", revision, head)
            if out.returncode not in (0, 1):
                return False  # unknown commit: may still arrive, so do not cache
            self._contains_cache[key] = out.returncode == 0
        return self._contains_cache[key]


# --------------------------------------------------------------------------------------------- state


@dataclass
class _AppProcess:
    role: str
    version: str
    port: int
    process: ManagedProcess
    ready: bool = False  # last /health answered 200
    health_note: str = "starting"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "version": self.version,
            "pid": self.process.pid,
            "port": self.port,
            "ready": self.ready,
            "health": self.health_note,
        }


@dataclass
class _Target:
    spec: LocalTarget
    proxy_port: int
    revision: str | None = None  # branch head whose desired state is being applied
    desired: Desired | None = None
    error: str | None = None  # why the values at `revision` cannot be applied
    active: dict[str, _AppProcess] = field(default_factory=dict)  # role -> process taking traffic
    pending: dict[str, _AppProcess] = field(default_factory=dict)  # role -> started, not yet healthy
    failures: dict[str, int] = field(default_factory=dict)  # role -> consecutive failed starts
    last_failure: dict[str, str] = field(default_factory=dict)  # role -> what happened
    next_start: dict[str, float] = field(default_factory=dict)  # role -> earliest restart (backoff)
    proxy: RunningServer | None = None
    preview_port: int = 0  # the preview's own proxy: a blue-green preview, reachable without live traffic
    preview_proxy: RunningServer | None = None

    def pick_preview(self) -> str | None:
        preview = self.active.get("preview")
        return preview.url if preview is not None else None

    def hand_over(self, wanted: dict[str, str]) -> None:
        """Give a role a running, healthy process of the version it wants from a role that no longer wants
        that version: a blue-green switch (preview -> stable, stable -> previous) and its switch back move
        processes between roles at once, as a Service's selector moves, instead of starting them anew."""
        # A canary is never handed over: its promotion starts the new stable process, as it always has.
        free = {
            proc.version: role
            for role, proc in self.active.items()
            if role in BLUE_GREEN_ROLES and wanted.get(role) != proc.version
        }
        moves = {}
        for role, version in wanted.items():
            current = self.active.get(role)
            if (
                role in BLUE_GREEN_ROLES
                and (current is None or current.version != version)
                and version in free
            ):
                moves[role] = self.active[free.pop(version)]
        if not moves:
            return
        kept = {role: proc for role, proc in self.active.items() if proc not in moves.values()}
        for role, proc in moves.items():
            displaced = kept.pop(role, None)
            if displaced is not None:  # the role's old process, still running: retired by _converge
                kept[f"retiring:{role}:{displaced.version}"] = displaced
            proc.role = role
            kept[role] = proc
        self.active = kept

    def processes(self) -> list[_AppProcess]:
        return [*self.active.values(), *self.pending.values()]

    def wanted(self) -> dict[str, str]:
        if self.desired is None:
            return {}
        wanted = {"stable": self.desired.stable}
        if self.desired.canary is not None:
            wanted["canary"] = self.desired.canary
        if self.desired.preview is not None:
            wanted["preview"] = self.desired.preview
        if self.desired.previous is not None:
            wanted["previous"] = self.desired.previous
        return wanted

    def pick_upstream(self) -> str | None:
        """Per request: the canary with probability weight/100, else stable (whichever of them runs)."""
        stable = self.active.get("stable")
        canary = self.active.get("canary")
        weight = self.desired.weight if self.desired is not None else 0
        if canary is not None and (stable is None or random.random() * 100 < weight):
            return canary.url
        return stable.url if stable is not None else None


class SyncRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------ reconciler


class LocalReconciler:
    """Runs in its own thread with its own event loop; `start()` returns the loopback API URL."""

    def __init__(
        self,
        gitops_repo: str | Path,
        branch: str,
        targets: Iterable[LocalTarget] | Mapping[str, str | Mapping[str, Any]],
        artifacts_root: Path,
        state_dir: Path,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        poll_interval: float = 0.5,
        sd_file: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"the reconciler API has no authentication: bind it to loopback, not {host}")
        if isinstance(targets, Mapping):
            specs = [LocalTarget.from_config(name, cfg) for name, cfg in targets.items()]
        else:
            specs = list(targets)
        self._specs = {t.name: t for t in specs}
        self._branch = branch
        self._artifacts = Path(artifacts_root).resolve()
        self._state = Path(state_dir).resolve()
        self._host = host
        self._port = port
        self._poll = poll_interval
        self._sd_file = sd_file
        self._sd_written: str | None = None
        self._python = python
        self._git = GitOpsSource(str(gitops_repo), branch, self._state / "gitops-mirror.git")
        self._targets: dict[str, _Target] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._api: RunningServer | None = None
        self._client: httpx.AsyncClient | None = None
        self._health_client: httpx.AsyncClient | None = None
        self._head: str | None = None
        self._git_error: str | None = None
        self._stopped = False
        self.url = ""

    # ------------------------------------------------------------------ public, thread-safe

    def start(self, timeout: float = 30.0) -> str:
        if self._thread is not None:
            raise RuntimeError("reconciler already started")
        (self._state / "logs").mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="aicd-reconciler", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"reconciler did not start within {timeout}s")
        if self._startup_error is not None:
            self._thread.join()
            raise RuntimeError(f"reconciler failed to start: {self._startup_error}") from self._startup_error
        atexit.register(self.stop)  # never leave demo apps behind, even if the caller forgets
        return self.url

    def stop(self) -> None:
        """Stop every process and server; idempotent."""
        if self._stopped or self._thread is None or self._loop is None:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        loop, stop_requested = self._loop, self._stop_requested
        if stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_requested.set)
        self._thread.join(timeout=60)

    def __enter__(self) -> LocalReconciler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def proxy_urls(self) -> dict[str, str]:
        return {name: f"http://{LOOPBACK}:{t.proxy_port}" for name, t in list(self._targets.items())}

    def status(self, target: str, revision: str | None = None) -> dict[str, Any]:
        return self._call(self._status_of(target, revision))

    def sync(self, target: str, revision: str) -> dict[str, Any]:
        return self._call(self._sync(target, revision))

    def add_target(self, target: LocalTarget) -> dict[str, Any]:
        return self._call(self._register(target))

    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("reconciler not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    # ------------------------------------------------------------------ loop thread

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                log.exception("reconciler crashed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._client = httpx.AsyncClient(
            timeout=30.0,
            trust_env=False,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self._health_client = httpx.AsyncClient(timeout=1.0, trust_env=False)
        control: asyncio.Task[None] | None = None
        try:
            for spec in self._specs.values():
                await self._register(spec)
            self._api = await start_server(
                self._api_app(), bind_socket(self._host, self._port), "reconciler-api"
            )
            self.url = f"http://{self._host}:{self._api.port}"
            async with self._lock:
                await self._reconcile()
            control = asyncio.create_task(self._control_loop(), name="reconciler-control")
            self._ready.set()
            await self._stop_requested.wait()
        finally:
            if control is not None:
                control.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await control
            await self._shutdown()

    async def _shutdown(self) -> None:
        servers = [
            server
            for t in self._targets.values()
            for server in (t.proxy, t.preview_proxy)
            if server is not None
        ]
        if self._api is not None:
            servers.append(self._api)
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
        processes = [p for t in self._targets.values() for p in t.processes()]
        for t in self._targets.values():
            t.active.clear()
            t.pending.clear()
        await asyncio.gather(*(asyncio.to_thread(p.process.stop) for p in processes))
        self._write_sd()
        for client in (self._client, self._health_client):
            if client is not None:
                await client.aclose()

    async def _control_loop(self) -> None:
        assert self._lock is not None and self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            try:
                async with self._lock:
                    await self._reconcile()
            except Exception:
                log.exception("reconcile failed")

    # ------------------------------------------------------------------ reconciling

    async def _register(self, spec: LocalTarget) -> dict[str, Any]:
        assert self._lock is not None
        async with self._lock:
            return await self._register_locked(spec)

    async def _register_locked(self, spec: LocalTarget) -> dict[str, Any]:
        existing = self._targets.get(spec.name)
        if existing is not None:
            if existing.spec.path != spec.path:
                raise SyncRejected(
                    409, f"target {spec.name} already follows {existing.spec.path}, not {spec.path}"
                )
            return self._describe(existing)
        assert self._client is not None
        sock = self._bind_proxy_socket(spec)
        target = _Target(spec=spec, proxy_port=int(sock.getsockname()[1]))
        target.proxy = await start_server(
            create_proxy_app(spec.name, target.pick_upstream, self._client), sock, f"proxy-{spec.name}"
        )
        preview_sock = bind_socket(LOOPBACK, 0)
        target.preview_port = int(preview_sock.getsockname()[1])
        target.preview_proxy = await start_server(
            create_proxy_app(f"{spec.name} (preview)", target.pick_preview, self._client),
            preview_sock,
            f"preview-{spec.name}",
        )
        self._targets[spec.name] = target
        self._remember_proxy_port(spec.name, target.proxy_port)
        if self._head is not None:
            await self._apply(target, self._head)
        return self._describe(target)

    def _bind_proxy_socket(self, spec: LocalTarget) -> Any:
        if spec.port:
            return bind_socket(LOOPBACK, spec.port)
        remembered = self._remembered_proxy_ports().get(spec.name)
        if remembered:
            # Same port as last run, so URLs people copied keep working; any free one if it is taken.
            with contextlib.suppress(OSError):
                return bind_socket(LOOPBACK, remembered)
        return bind_socket(LOOPBACK, 0)

    def _remembered_proxy_ports(self) -> dict[str, int]:
        try:
            data = json.loads((self._state / "proxy-ports.json").read_text())
            return {str(k): int(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _remember_proxy_port(self, name: str, port: int) -> None:
        ports = self._remembered_proxy_ports()
        ports[name] = port
        write_atomic(self._state / "proxy-ports.json", json.dumps(ports, indent=2, sort_keys=True))

    async def _reconcile(self) -> None:
        try:
            head = await asyncio.to_thread(self._git.head)
            self._git_error = None if head else f"branch {self._branch} not found in {self._git.repo}"
        except Exception as exc:
            head, self._git_error = None, f"cannot read the GitOps repo: {exc}"
        if head is not None and head != self._head:
            self._head = head
            for target in self._targets.values():
                await self._apply(target, head)
        for target in list(self._targets.values()):
            await self._converge(target)
        self._write_sd()

    async def _apply(self, target: _Target, head: str) -> None:
        """Take the desired state of `target` from commit `head` (processes follow in _converge)."""
        text = await asyncio.to_thread(self._git.show, head, target.spec.path)
        target.revision = head
        if text is None:
            target.desired, target.error = None, f"{target.spec.path} does not exist at {head[:12]}"
            return
        try:
            desired = parse_values(text, target.spec.keys)
        except ValueError as exc:
            target.desired, target.error = None, f"{target.spec.path} at {head[:12]}: {exc}"
            return
        if desired != target.desired:
            target.failures.clear()
            target.last_failure.clear()
            target.next_start.clear()
        target.desired, target.error = desired, None

    async def _converge(self, target: _Target) -> None:
        await self._check_health(target)
        now = time.monotonic()
        retire: list[_AppProcess] = []
        # Processes that exited: forget them (a replacement starts below, after a backoff).
        for table in (target.active, target.pending):
            for role, proc in list(table.items()):
                code = proc.process.returncode()
                if code is not None:
                    del table[role]
                    n = target.failures.get(role, 0) + 1
                    target.failures[role] = n
                    tail = proc.process.log_tail().splitlines()
                    target.last_failure[role] = f"{role} {proc.version} exited with code {code}" + (
                        f": {tail[-1]}" if tail else ""
                    )
                    target.next_start[role] = now + min(10.0, 0.5 * 2**n)
        wanted = target.wanted()
        if target.desired is not None:
            target.hand_over(wanted)
        if target.desired is not None:  # an unreadable values file changes nothing that runs
            for table in (target.active, target.pending):
                for role in [r for r in table if r not in wanted]:
                    retire.append(table.pop(role))
            for role, version in wanted.items():
                pending = target.pending.get(role)
                if pending is not None and pending.version != version:
                    retire.append(target.pending.pop(role))
        # Healthy replacements take over; the process they replace stops.
        for role, proc in list(target.pending.items()):
            if proc.ready:
                del target.pending[role]
                old = target.active.get(role)
                if old is not None:
                    retire.append(old)
                target.active[role] = proc
                target.failures.pop(role, None)
                target.last_failure.pop(role, None)
        for role, version in wanted.items():
            active = target.active.get(role)
            if role in target.pending or (active is not None and active.version == version):
                continue
            if now >= target.next_start.get(role, 0.0):
                started = self._start_process(target, role, version)
                if started is not None:
                    target.pending[role] = started
        if retire:
            # Removed from the routing tables above first, so the proxy no longer picks them.
            await asyncio.gather(*(asyncio.to_thread(p.process.stop) for p in retire))

    def _artifact_config(self, version: str) -> Path:
        return self._artifacts / version / CONFIG_FILE

    def _start_process(self, target: _Target, role: str, version: str) -> _AppProcess | None:
        config = self._artifact_config(version)
        if not config.is_file():
            target.last_failure[role] = f"{role} {version}: artifact not found ({config} is missing)"
            return None
        port = free_port()
        # The metrics' track: only a canary is "canary". A blue-green preview becomes the stable version at the
        # switch without a restart (it keeps its label), and it takes no live traffic before it.
        track = "canary" if role == "canary" else "stable"
        argv = [self._python, "-m", "aicd.dev.demo_app", "--port", str(port), "--track", track]
        argv += ["--version", version, "--config", str(config), "--exit-with-parent"]
        if target.spec.app:
            argv += ["--app", target.spec.app]
        # The child must import aicd even when it is not installed (a source checkout on PYTHONPATH).
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        log_path = self._state / "logs" / f"{target.spec.name}.{role}.{version}.log"
        process = ManagedProcess(argv, log_path, env=env).start()
        log.info(
            "target %s: started %s %s (pid %d, port %d)", target.spec.name, role, version, process.pid, port
        )
        return _AppProcess(role=role, version=version, port=port, process=process)

    async def _check_health(self, target: _Target) -> None:
        assert self._health_client is not None
        client = self._health_client

        async def probe(proc: _AppProcess) -> None:
            if not proc.process.alive():
                proc.ready, proc.health_note = False, "not running"
                return
            try:
                response = await client.get(f"{proc.url}/health")
            except httpx.HTTPError as exc:
                proc.ready = False
                proc.health_note = "starting" if isinstance(exc, httpx.ConnectError) else f"/health: {exc!r}"
                return
            proc.ready = response.status_code == 200
            proc.health_note = "ok" if proc.ready else f"/health answered {response.status_code}"

        await asyncio.gather(*(probe(p) for p in target.processes()))

    # ------------------------------------------------------------------ status

    def _describe(self, target: _Target) -> dict[str, Any]:
        desired = target.desired
        problems: list[str] = []
        if target.revision is None:
            problems.append(self._git_error or "waiting for the first poll of the GitOps repo")
        elif target.error is not None:
            problems.append(target.error)
        for role, version in target.wanted().items():
            active, pending = target.active.get(role), target.pending.get(role)
            if active is not None and active.version == version and pending is None:
                if not active.ready:
                    problems.append(f"{role} {version} not healthy: {active.health_note}")
                continue
            if pending is not None:
                problems.append(f"{role} {version} not healthy yet: {pending.health_note}")
            if role in target.last_failure:
                problems.append(target.last_failure[role])
            elif pending is None:
                problems.append(f"{role} {version} not started yet")
        healthy = not problems and desired is not None
        if healthy:
            assert desired is not None
            message = f"stable {desired.stable} healthy"
            if desired.canary is not None:
                message += f", canary {desired.canary} healthy at weight {desired.weight}%"
            if desired.preview is not None:
                message += f", preview {desired.preview} healthy"
            if desired.previous is not None:
                message += f", previous {desired.previous} kept warm"
        else:
            message = "; ".join(problems)
        # Argo CD's health vocabulary, so `aicd status` reads the same for local and argocd targets.
        if healthy:
            phase = "Healthy"
        elif target.error is not None or target.last_failure:
            phase = "Degraded"
        elif desired is None:
            phase = "Missing"
        else:
            phase = "Progressing"
        return {
            "target": target.spec.name,
            "path": target.spec.path,
            "revision": target.revision,
            "healthy": healthy,
            "phase": phase,
            "message": message,
            "stable": desired.stable if desired else None,
            "canary": desired.canary if desired else None,
            "weight": desired.weight if desired else 0,
            "preview": desired.preview if desired else None,
            "previous": desired.previous if desired else None,
            "proxy": f"http://{LOOPBACK}:{target.proxy_port}",
            "processes": [p.describe() for p in target.processes()],
            # By verification placeholder (aicd.verification): live traffic, and each role's own process.
            "urls": {
                "url": f"http://{LOOPBACK}:{target.proxy_port}",
                "preview.url": f"http://{LOOPBACK}:{target.preview_port}",
                **{f"{role}.url": p.url for role, p in target.active.items() if role == "canary"},
            },
        }

    async def _status_of(self, name: str, revision: str | None = None) -> dict[str, Any]:
        target = self._targets.get(name)
        if target is None:
            raise SyncRejected(404, f"unknown local target {name!r}; known: {sorted(self._targets)}")
        status = self._describe(target)
        if revision is not None:
            applied = target.revision is not None and await asyncio.to_thread(
                self._git.contains, revision, target.revision
            )
            status["requested"] = revision
            status["applied"] = applied
        return status

    async def _sync(self, name: str, revision: str) -> dict[str, Any]:
        """Refresh from Git now and report; the revision must be on the branch (Argo CD's sync-to-head)."""
        assert self._lock is not None
        if name not in self._targets:
            raise SyncRejected(404, f"unknown local target {name!r}; known: {sorted(self._targets)}")
        async with self._lock:
            await self._reconcile()
        head = self._head
        if head is None:
            raise SyncRejected(409, self._git_error or f"branch {self._branch} not found")
        if not await asyncio.to_thread(self._git.contains, revision, head):
            raise SyncRejected(
                409,
                f"revision {revision} is not on branch {self._branch} of the GitOps repo (head {head[:12]})",
            )
        return await self._status_of(name, revision)

    def _write_sd(self) -> None:
        """Prometheus file_sd: every running demo-app process, labelled with its target."""
        if self._sd_file is None:
            return
        groups = [
            {"targets": [f"{LOOPBACK}:{p.port}"], "labels": {"target": name}}
            for name, t in sorted(self._targets.items())
            for p in t.processes()
            if p.process.alive()
        ]
        text = json.dumps(groups, indent=1)
        if text != self._sd_written:
            write_atomic(self._sd_file, text)
            self._sd_written = text

    # ------------------------------------------------------------------ HTTP API

    def _api_app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok", "head": self._head})

        async def list_targets(request: Request) -> Response:
            return JSONResponse({"targets": {n: self._describe(t) for n, t in sorted(self._targets.items())}})

        async def get_target(request: Request) -> Response:
            try:
                status = await self._status_of(
                    request.path_params["name"], request.query_params.get("revision")
                )
            except SyncRejected as exc:
                return JSONResponse({"error": str(exc)}, exc.status)
            return JSONResponse(status)

        async def post_target(request: Request) -> Response:
            try:
                body = await _json_object(request)
                name = body.get("name")
                if not isinstance(name, str) or not name:
                    raise SyncRejected(400, "`name` is required")
                spec = LocalTarget.from_config(name, {k: v for k, v in body.items() if k != "name"})
                return JSONResponse(await self._register(spec))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            except SyncRejected as exc:
                return JSONResponse({"error": str(exc)}, exc.status)

        async def post_sync(request: Request) -> Response:
            try:
                body = await _json_object(request)
                name, revision = body.get("target"), body.get("revision")
                if not isinstance(name, str) or not isinstance(revision, str) or not name or not revision:
                    raise SyncRejected(400, 'expected {"target": NAME, "revision": SHA}')
                if name not in self._targets and body.get("path"):
                    # First sync of a target this reconciler was not told about: register it on the fly.
                    config = {k: body[k] for k in ("path", "app", "port", "keys") if body.get(k) is not None}
                    await self._register(LocalTarget.from_config(name, config))
                return JSONResponse(await self._sync(name, revision))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            except SyncRejected as exc:
                return JSONResponse({"error": str(exc)}, exc.status)

        return Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/targets", list_targets),
                Route("/targets", post_target, methods=["POST"]),
                Route("/targets/{name}", get_target),
                Route("/sync", post_sync, methods=["POST"]),
            ]
        )


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise SyncRejected(400, "request body is not JSON") from None
    if not isinstance(body, dict):
        raise SyncRejected(400, "request body must be a JSON object")
    return body


# ----------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aicd.dev.reconciler", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--gitops", required=True, help="GitOps repository (path of a local bare repo, or URL)"
    )
    parser.add_argument("--branch", default="main")
    parser.add_argument(
        "--targets", type=Path, help="JSON file: {target: values path | {path, app, port, keys}}"
    )
    parser.add_argument(
        "--artifacts", type=Path, required=True, help="artifacts root (<root>/<tag>/app.yaml)"
    )
    parser.add_argument("--state", type=Path, required=True, help="state directory (logs, remembered ports)")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0, help="API port (0: any free port)")
    parser.add_argument("--sd-file", type=Path, help="Prometheus file_sd JSON to keep up to date")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls of the branch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        targets = load_targets_file(args.targets) if args.targets else []
        reconciler = LocalReconciler(
            args.gitops,
            args.branch,
            targets,
            args.artifacts,
            args.state,
            host=args.host,
            port=args.port,
            poll_interval=args.poll,
            sd_file=args.sd_file,
        )
        url = reconciler.start()
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    info = {"url": url, "proxies": reconciler.proxy_urls(), "pid": os.getpid()}
    write_atomic(args.state / "reconciler.json", json.dumps(info, indent=2))
    print(json.dumps(info), flush=True)  # one line a parent process can wait for
    try:
        stop.wait()
    finally:
        reconciler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
