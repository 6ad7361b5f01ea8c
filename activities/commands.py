"""Build, test and provision commands: argv lists from the spec run in a checkout of the source repo at the
delivery's revision. Never a shell; the whole process group dies on timeout or cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import git
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aicd.spec.placeholders import placeholders_in

OUTPUT_TAIL_BYTES = 4000
HEARTBEAT_EVERY_S = 2.0


@dataclass
class CommandRequest:
    delivery_id: str
    name: str  # build | test name | provision name
    argv: list[str]  # placeholders already filled by the plan
    timeout_s: float
    source_repo: str
    revision: str
    artifact: str


@dataclass
class CommandResult:
    name: str
    exit_code: int
    seconds: float
    output_tail: str
    log_path: str


class CommandActivities:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def _checkout(self, request: CommandRequest) -> Path:
        """The delivery's source checkout, made once (idempotent across retries and workers)."""
        workdir = self.state_dir / "work" / request.delivery_id / "source"
        marker = workdir.parent / "checkout.done"
        if marker.exists():
            return workdir
        if workdir.exists():
            import shutil

            shutil.rmtree(workdir)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        try:
            repo = git.Repo.clone_from(request.source_repo, workdir, no_checkout=True)
            repo.git.checkout("--detach", "--quiet", request.revision)
        except git.GitCommandError as error:
            message = (error.stderr or str(error)).strip()
            raise ApplicationError(
                f"cannot check out {request.revision} of {request.source_repo}: {message}",
                type="SourceUnavailable",
            ) from error
        marker.write_text(request.revision)
        return workdir

    @activity.defn(name="run_command")
    async def run_command(self, request: CommandRequest) -> CommandResult:
        leftover = [name for arg in request.argv for name in placeholders_in(arg)]
        if leftover:
            raise ApplicationError(
                f"{request.name}: placeholders {leftover} have no value for a command",
                non_retryable=True,
                type="CommandInvalid",
            )
        workdir = await asyncio.to_thread(self._checkout, request)
        log_dir = self.state_dir / "logs" / request.delivery_id
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{request.name}.log"
        env = {
            **os.environ,
            "AICD_DELIVERY": request.delivery_id,
            "AICD_REVISION": request.revision,
            "AICD_ARTIFACT": request.artifact,
        }
        started = time.monotonic()
        with open(log_path, "wb") as log_file:
            try:
                process = await asyncio.create_subprocess_exec(
                    *request.argv,
                    cwd=workdir,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # its own process group, so we can kill all of it
                )
            except (FileNotFoundError, PermissionError) as error:
                raise ApplicationError(
                    f"{request.name}: cannot run {request.argv[0]!r}: {error.strerror}",
                    non_retryable=True,
                    type="CommandFailed",
                ) from error
            try:
                exit_code = await self._wait(process, request)
            finally:
                if process.returncode is None:
                    _kill_group(process.pid)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(process.wait(), 5)
        seconds = time.monotonic() - started
        tail = _tail(log_path)
        if exit_code != 0:
            raise ApplicationError(
                f"{request.name} exited with {exit_code} after {seconds:.1f}s; output tail:\n{tail}",
                CommandResult(request.name, exit_code, seconds, tail, str(log_path)),
                non_retryable=True,
                type="CommandFailed",
            )
        return CommandResult(request.name, exit_code, seconds, tail, str(log_path))

    async def _wait(self, process: asyncio.subprocess.Process, request: CommandRequest) -> int:
        deadline = time.monotonic() + request.timeout_s
        while True:
            activity.heartbeat(request.name)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill_group(process.pid)
                await process.wait()
                raise ApplicationError(
                    f"{request.name} timed out after {request.timeout_s:.0f}s", non_retryable=True, type="CommandTimeout"
                )
            try:
                return await asyncio.wait_for(process.wait(), min(HEARTBEAT_EVERY_S, remaining))
            except TimeoutError:
                continue


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(path: Path) -> str:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(max(0, size - OUTPUT_TAIL_BYTES))
        return file.read().decode("utf-8", errors="replace")
