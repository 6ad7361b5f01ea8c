"""`aicd dev` and aicd.dev.temporal: a reachable Temporal with the aicd search attributes, the worker, durable
state across restarts, clean shutdown on SIGINT/SIGTERM with no orphans, clean errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from aicd.dev.guardian import stop_groups
from aicd.dev.ports import free_port
from aicd.dev.processes import LIFELINE, Lifeline, ManagedProcess, wait_gone
from aicd.dev.temporal import (
    DEV_INFO_FILE,
    DEV_SERVER_DYNAMIC_CONFIG,
    SEARCH_ATTRIBUTES,
    DevStackError,
    EmbeddedTemporal,
    dev_address,
    read_dev_info,
    start_service,
)
from tests.conftest import REPO_ROOT, aicd_env

APP = SearchAttributeKey.for_keyword("AicdApp")


# --- helpers -----------------------------------------------------------------------------------------------------


class Lines:
    """Collects a child's output lines in a thread, so a test can wait for one without blocking forever."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or "<EOF>" in self.lines:
                    raise AssertionError(f"{text!r} not seen; output so far: {self.lines}")
                self._changed.wait(left)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(line for line in self.lines if line != "<EOF>")


class DevProcess:
    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        assert popen.stdout is not None and popen.stderr is not None
        self.stdout = Lines(popen.stdout)
        self.stderr = Lines(popen.stderr)


def living_processes_mentioning(text: str) -> list[psutil.Process]:
    """Processes (not zombies) whose command line mentions `text`: with a unique temporary state dir, exactly
    the ones a stack started."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        mine = process.pid != os.getpid() and process.info["status"] != psutil.STATUS_ZOMBIE
        if mine and any(text in part for part in cmdline):
            found.append(process)
    return found


def wait_no_processes(text: str, timeout: float = 15.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = living_processes_mentioning(text)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    # Whatever a failed test left behind goes; the assertions on orphans are in the tests themselves.
    for process in living_processes_mentioning(str(state)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            process.kill()


@pytest.fixture
def run_dev(state_dir: Path) -> Iterator[object]:
    started: list[DevProcess] = []

    def run(*args: str, env: dict[str, str] | None = None) -> DevProcess:
        popen = subprocess.Popen(
            [sys.executable, "-m", "aicd", "dev", "--state-dir", str(state_dir), *args],
            cwd=REPO_ROOT,
            env=env or aicd_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # the test signals it by pid; a teardown can take its group down
        )
        process = DevProcess(popen)
        started.append(process)
        return process

    yield run
    for process in started:
        if process.popen.poll() is None:
            os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait(10)


async def assert_search_attributes(client: Client) -> None:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    for name in ("AicdApp", "AicdStage", "AicdPhase"):
        assert listed.custom_attributes.get(name) == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD, name
    assert set(SEARCH_ATTRIBUTES) == {"AicdApp", "AicdStage", "AicdPhase"}


# --- aicd dev (subprocess) ---------------------------------------------------------------------------------------


async def test_dev_no_worker_serves_temporal_and_stops_cleanly_on_sigint(run_dev, state_dir: Path) -> None:
    port, ui_port = free_port(), free_port()
    dev = run_dev("--no-worker", "--port", str(port), "--ui-port", str(ui_port))
    dev.stdout.wait_for("Ctrl-C stops everything.")
    address = f"127.0.0.1:{port}"
    assert dev.stdout.wait_for("Temporal gRPC").split() == [
        "Temporal",
        "gRPC",
        address,
        "(namespace",
        "default)",
    ]
    assert dev.stdout.wait_for("export TEMPORAL_ADDRESS=").strip() == f"export TEMPORAL_ADDRESS={address}"
    assert dev.stdout.wait_for("Temporal UI").split()[-1] == f"http://127.0.0.1:{ui_port}"
    assert "not started (--no-worker)" in dev.stdout.wait_for("  worker  ")

    client = await Client.connect(address)
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace="default")
    )
    assert described.namespace_info.name == "default"
    await assert_search_attributes(client)
    assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10, trust_env=False).status_code == 200

    info = read_dev_info(state_dir)
    assert info is not None
    assert info["address"] == address and info["pid"] == dev.popen.pid and info["worker_pid"] is None
    temporal = psutil.Process(info["temporal_pid"])
    assert temporal.is_running() and str(state_dir / "temporal.db") in temporal.cmdline()
    # The server runs with Temporal's task read limits raised (its one shard would hold back-to-back tasks).
    settings = {setting for setting in temporal.cmdline() if "=" in setting}
    assert {f"{key}={value}" for key, value in DEV_SERVER_DYNAMIC_CONFIG.items()} <= settings
    assert os.getpgid(temporal.pid) == temporal.pid != os.getpgid(dev.popen.pid)  # its own process group
    assert dev_address(state_dir) == address

    os.kill(dev.popen.pid, signal.SIGINT)
    assert dev.popen.wait(timeout=60) == 0
    assert dev.stdout.text().splitlines()[-1] == "aicd dev: stopped (SIGINT)"
    assert "Traceback" not in dev.stderr.text()
    assert not psutil.pid_exists(temporal.pid) or temporal.status() == psutil.STATUS_ZOMBIE
    assert wait_no_processes(str(state_dir)) == []
    assert not (state_dir / DEV_INFO_FILE).exists()
    assert dev_address(state_dir) is None
    assert (state_dir / "temporal.db").is_file()


async def test_dev_runs_the_worker_and_stops_both_on_sigterm(run_dev, state_dir: Path) -> None:
    dev = run_dev("--port", "0", "--ui-port", "0")
    dev.stdout.wait_for("Ctrl-C stops everything.", timeout=120)
    info = read_dev_info(state_dir)
    assert info is not None and info["worker_pid"] and info["task_queue"] == "aicd"
    worker = psutil.Process(info["worker_pid"])
    assert "aicd.worker" in " ".join(worker.cmdline())
    assert f"pid {worker.pid}" in dev.stdout.wait_for("  worker  ")

    client = await Client.connect(info["address"])
    pollers = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace="default",
            task_queue=TaskQueue(name="aicd"),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    assert any(poller.identity.startswith(f"{worker.pid}@") for poller in pollers.pollers)
    assert worker.environ().get("TEMPORAL_ADDRESS") == info["address"]
    # `local` targets (aicd init's) run on the stack's reconciler, which the worker is told about.
    reconciler = dev.stdout.wait_for("  local targets  ").split()[3].rstrip(",")
    assert worker.environ().get("AICD_RECONCILER_URL") == reconciler
    assert httpx.get(f"{reconciler}/targets", timeout=10, trust_env=False).status_code == 200
    assert (state_dir / "gitops.git" / "HEAD").is_file()
    dashboard = dev.stdout.wait_for("  Dashboard  ").split()[1]  # it reads this stack's Temporal
    assert httpx.get(f"{dashboard}/", timeout=10, trust_env=False).status_code == 200

    os.kill(dev.popen.pid, signal.SIGTERM)
    assert dev.popen.wait(timeout=60) == 0
    assert "Traceback" not in dev.stderr.text()
    assert wait_no_processes(str(state_dir)) == []
    log = (state_dir / "logs" / "worker.log").read_text()
    assert "worker (role all) running on task queues aicd" in log
    assert "Finished server process" in (state_dir / "logs" / "dashboard.log").read_text()


def guardian_of(process: psutil.Process) -> psutil.Process:
    (guardian,) = [child for child in process.children() if "aicd.dev.guardian" in child.cmdline()]
    return guardian


def test_a_dev_stack_killed_outright_takes_its_processes_with_it(run_dev, state_dir: Path) -> None:
    """Killed with SIGKILL (the OOM killer) or a closed terminal's SIGHUP, `aicd dev` cannot stop what it
    started: its guardian does, and the next start finds nothing left."""
    for sig in (signal.SIGKILL, signal.SIGHUP):
        dev = run_dev("--port", "0", "--ui-port", "0")
        dev.stdout.wait_for("Ctrl-C stops everything.", timeout=120)
        info = read_dev_info(state_dir)
        assert info is not None and info["worker_pid"]
        started = psutil.Process(dev.popen.pid).children()
        stack = [child.pid for child in started if "aicd.dev.guardian" not in child.cmdline()]
        assert {info["temporal_pid"], info["worker_pid"]} < set(stack)  # and the dashboard
        assert guardian_of(psutil.Process(dev.popen.pid)).pid not in stack

        os.kill(dev.popen.pid, sig)
        dev.popen.wait(timeout=10)
        assert wait_gone(stack, timeout=30) == [], sig
        assert wait_gone([child.pid for child in started], timeout=10) == []  # the guardian too
    again = run_dev("--no-worker", "--port", "0", "--ui-port", "0")
    again.stdout.wait_for("Ctrl-C stops everything.")
    os.kill(again.popen.pid, signal.SIGTERM)
    assert again.popen.wait(timeout=60) == 0


def test_a_dev_stack_killed_outright_is_named_by_the_next_start_with_how_to_stop_it(
    run_dev, state_dir: Path
) -> None:
    first = run_dev("--port", "0", "--ui-port", "0")
    first.stdout.wait_for("Ctrl-C stops everything.", timeout=120)
    info = read_dev_info(state_dir)
    assert info is not None and info["worker_pid"]
    temporal_pid, worker_pid = info["temporal_pid"], info["worker_pid"]
    children = psutil.Process(
        first.popen.pid
    ).children()  # the dashboard names no state dir: kept to clean up
    try:
        # Its guardian killed first (the OOM killer took both), then aicd dev alone: what is left runs on.
        guardian = guardian_of(psutil.Process(first.popen.pid))
        guardian.kill()
        assert wait_gone([guardian.pid], timeout=10) == []
        os.kill(first.popen.pid, signal.SIGKILL)
        first.popen.wait(timeout=10)
        assert psutil.pid_exists(temporal_pid) and psutil.pid_exists(worker_pid)

        second = run_dev("--port", "0", "--ui-port", "0")
        assert second.popen.wait(timeout=60) == 1
        assert second.stderr.text().splitlines() == [
            f"aicd: an earlier `aicd dev` of {state_dir} (pid {first.popen.pid}) ended without stopping its"
            f" Temporal (pid {temporal_pid}) and its worker (pid {worker_pid}); stop them first: kill"
            f" {temporal_pid} {worker_pid}"
        ]
        assert psutil.Process(temporal_pid).is_running()  # untouched: the refusal stops nothing itself
        subprocess.run(["kill", str(temporal_pid), str(worker_pid)], check=True)  # what it says to do
        assert wait_gone([temporal_pid, worker_pid], timeout=30) == []

        third = run_dev("--no-worker", "--port", "0", "--ui-port", "0")
        third.stdout.wait_for("Ctrl-C stops everything.")
        os.kill(third.popen.pid, signal.SIGTERM)
        assert third.popen.wait(timeout=60) == 0
    finally:
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


def test_dev_exits_1_when_temporal_dies(run_dev, state_dir: Path) -> None:
    dev = run_dev("--no-worker", "--port", "0", "--ui-port", "0")
    dev.stdout.wait_for("Ctrl-C stops everything.")
    info = read_dev_info(state_dir)
    assert info is not None
    os.killpg(info["temporal_pid"], signal.SIGKILL)
    assert dev.popen.wait(timeout=30) == 1
    assert "aicd: the Temporal dev server exited with status -9" in dev.stderr.text()
    assert "Traceback" not in dev.stderr.text()
    assert wait_no_processes(str(state_dir)) == []


def test_dev_without_a_temporal_binary_fails_cleanly(run_dev, state_dir: Path) -> None:
    dev = run_dev("--no-worker", env=aicd_env(AICD_TEMPORAL_BIN="/nonexistent/temporal"))
    assert dev.popen.wait(timeout=60) == 1
    assert dev.stderr.text().splitlines() == [
        "aicd: AICD_TEMPORAL_BIN=/nonexistent/temporal is not an executable file"
    ]


def test_dev_usage_errors(run_dev) -> None:
    assert run_dev("--port", "70000").popen.wait(timeout=60) == 2
    assert run_dev("--port", "many").popen.wait(timeout=60) == 2


# --- EmbeddedTemporal (in-process) ---------------------------------------------------------------------------------


async def test_restart_keeps_workflows_and_search_attributes(state_dir: Path) -> None:
    first = EmbeddedTemporal(state_dir, port=0, ui=False)
    address = first.start()
    try:
        client = await first.client()
        handle = await client.start_workflow(
            "NobodyRunsThis",
            id="aicd-devstack-restart",
            task_queue="nobody-polls-this",
            search_attributes=TypedSearchAttributes([SearchAttributePair(APP, "restart-check")]),
        )
        run_id = handle.result_run_id
        assert dev_address(state_dir) == address

        # One stack per state dir: a second one is refused while the first runs.
        with pytest.raises(DevStackError, match="a dev stack already runs for"):
            EmbeddedTemporal(state_dir, port=0, ui=False).start()

        # A worker that cannot start is reported with its exit status and log, not left behind.
        with pytest.raises(DevStackError, match=r"the worker exited with status 2 during start-up .*--bogus"):
            first.start_worker(extra_args=["--bogus"], timeout=60)
        assert first.worker is None
    finally:
        assert first.stop() == 0
    assert wait_no_processes(str(state_dir)) == []
    assert dev_address(state_dir) is None

    # Same SQLite file, the same --namespace/--search-attribute flags again: it comes back with everything.
    with EmbeddedTemporal(state_dir, port=0, ui=False) as second:
        client = await second.client()
        await assert_search_attributes(client)
        described = await client.get_workflow_handle("aicd-devstack-restart").describe()
        assert described.run_id == run_id
        assert described.status == WorkflowExecutionStatus.RUNNING
        assert described.typed_search_attributes.get(APP) == "restart-check"
        await client.get_workflow_handle("aicd-devstack-restart").terminate("test done")
    assert wait_no_processes(str(state_dir)) == []


def test_explicit_port_that_is_taken_is_an_error(state_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DevStackError, match=f"--port {port} is taken on 127.0.0.1"):
            EmbeddedTemporal(state_dir, port=port, ui=False).start()
        # The default port falls back to a free one when taken.
        picked, automatic = EmbeddedTemporal(state_dir)._pick(None, port)
        assert picked != port and automatic
    assert living_processes_mentioning(str(state_dir)) == []


def test_dev_address_ignores_stale_or_broken_info(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    info_path = state_dir / DEV_INFO_FILE
    assert dev_address(state_dir) is None
    info_path.write_text("{not json")
    assert dev_address(state_dir) is None
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        info_path.write_text(json.dumps({"address": address, "pid": int(dead.stdout)}))
        assert dev_address(state_dir) is None  # the stack's process is gone
        info_path.write_text(json.dumps({"address": address, "pid": os.getpid()}))
        assert dev_address(state_dir) == address
        assert dev_address(str(state_dir)) == address
    assert dev_address(state_dir) is None  # nothing answers there any more


def test_start_service_logs_under_the_state_dir_and_stops_the_whole_group(state_dir: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    service = start_service("sleeper", [sys.executable, "-c", script, str(state_dir)], state_dir)
    log = state_dir / "logs" / "sleeper.log"
    deadline = time.monotonic() + 30
    while "child" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(log.read_text().split()[1])
    assert psutil.pid_exists(grandchild)
    service.stop(grace=5)
    assert not service.alive()
    # The group got the signal; the grandchild (reparented, reaped by init) is gone moments later.
    assert wait_gone([grandchild], timeout=10) == []


def test_the_guardian_runs_while_a_process_is_guarded_and_signals_only_the_process_it_was_given(
    state_dir: Path,
) -> None:
    assert LIFELINE.guardian_pid() is None  # nothing of this test process runs
    first = start_service("one", ["sleep", "600"], state_dir)
    second = start_service("two", ["sleep", "600"], state_dir)
    guardian = LIFELINE.guardian_pid()
    assert guardian is not None and "aicd.dev.guardian" in psutil.Process(guardian).cmdline()
    first.stop(grace=5)
    assert LIFELINE.guardian_pid() == guardian  # the second still runs
    # A pid whose process started at another time (the pid reused) is not the guarded one: left alone.
    assert stop_groups({second.pid: psutil.Process(second.pid).create_time() + 1}, grace=1) == []
    assert second.alive()
    second.stop(grace=5)
    assert LIFELINE.guardian_pid() is None
    assert wait_gone([guardian], timeout=10) == []
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        assert stop_groups({sleeper.pid: psutil.Process(sleeper.pid).create_time()}, grace=5) == [sleeper.pid]
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_process_whose_guardian_cannot_start_is_stopped_not_left_unguarded(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_guardian(self: Lifeline) -> subprocess.Popen[bytes]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(Lifeline, "_spawn", no_guardian)
    assert LIFELINE.guardian_pid() is None
    process = ManagedProcess(["sleep", "600"], state_dir / "sleeper.log")
    with pytest.raises(OSError, match="Too many open files"):
        process.start()
    assert not process.alive() and process.returncode() == -signal.SIGTERM
    monkeypatch.undo()
    assert start_service("after", ["sleep", "600"], state_dir).stop(grace=5) == -signal.SIGTERM
    assert LIFELINE.guardian_pid() is None


def test_embedded_dashboard_serves_on_the_socket_bound_for_it_never_on_a_port_someone_else_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack binds the dashboard's port itself and hands the socket over: another process that tries to
    take the port while the dashboard starts (the race a free-then-bind check lost) cannot, and a server
    already on 8090 is never taken for the dashboard."""
    from aicd.dashboard import embedded

    embedded.ensure_token(tmp_path / embedded.TOKENS_FILE, "ada")
    racers: list[socket.socket] = []
    raced: list[bool] = []

    def start_service_while_someone_grabs_the_port(
        name: str, argv: list[str], *args: Any, **kwargs: Any
    ) -> Any:
        racer = socket.socket()
        racer.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as another aicd stack binds
        racers.append(racer)
        try:
            racer.bind(("127.0.0.1", int(argv[argv.index("--port") + 1])))
            racer.listen()
            raced.append(True)
        except OSError:
            raced.append(False)
        return start_service(name, argv, *args, **kwargs)

    monkeypatch.setattr(embedded, "start_service", start_service_while_someone_grabs_the_port)
    impostor = socket.socket()
    racers.append(impostor)
    with contextlib.suppress(OSError):  # someone else may hold it already: the dashboard must not be them
        impostor.bind(("127.0.0.1", embedded.DEFAULT_PORT))
        impostor.listen()
    try:
        process, url = embedded.start_dashboard(tmp_path, "127.0.0.1:1", "default")
        try:
            port = int(url.rsplit(":", 1)[1])
            assert port != embedded.DEFAULT_PORT
            assert raced == [False], (
                "another process could take the port between the check and the child's bind"
            )
            listening = {
                c.laddr.port for c in psutil.Process(process.pid).net_connections() if c.status == "LISTEN"
            }
            assert port in listening, f"the dashboard process listens on {listening}, not on {port}"
            assert httpx.get(f"{url}/healthz", timeout=10, trust_env=False).status_code == 200
        finally:
            process.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2, trust_env=False)
    finally:
        for racer in racers:
            racer.close()
