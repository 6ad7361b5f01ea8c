"""Build, test and provision commands: argv lists from the spec run in a checkout of the source repo at the
delivery's revision. Never a shell; the whole process group dies on timeout or cancellation.

A command gets an explicit environment, never the worker's: a small fixed base (`BASE_ENV`), the spec's
`env` (literal values), the spec's `secretEnv` (names only; their values are read here, on the worker, from
the secrets the operator allows: `AICD_COMMAND_SECRET_ENV` and `AICD_COMMAND_SECRET_DIR`), and the
`AICD_*` values of the delivery (with `AICD_REPORTS_DIR`, where it may leave JSON reports for the policy
gate). Its output goes to a log file on the worker with every secret value the
worker holds masked; only the tail of that (masked, credentials redacted) output reaches the result or the
failure, and so Temporal history, status and Slack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import git
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aicd.errors import ErrorType
from aicd.redact import SecretMask, process_mask, redact, redact_credentials, redact_cut, remember_secret
from aicd.spec.placeholders import placeholders_in

OUTPUT_TAIL_BYTES = 4000
HEARTBEAT_EVERY_S = 2.0
OUTPUT_DRAIN_S = 5.0  # after the command exits: how long a leftover grandchild may keep its output open
READ_CHUNK_BYTES = 64 * 1024
# Passed through from the worker when set; nothing else of its environment is.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
SECRET_ENV_NAMES_ENV = "AICD_COMMAND_SECRET_ENV"  # comma/space-separated worker variables specs may pass
SECRET_DIR_ENV = (
    "AICD_COMMAND_SECRET_DIR"  # a directory of secret files (name = file name), e.g. a mounted Secret
)
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class CommandRequest:
    delivery_id: str
    name: str  # build | test name | provision name
    argv: list[str]  # placeholders already filled by the plan
    timeout_s: float
    source_repo: str
    revision: str
    artifact: str
    env: dict[str, str] = field(default_factory=dict)  # literal values from the spec
    secret_env: list[str] = field(default_factory=list)  # names only: values never leave the worker


@dataclass
class CommandResult:
    name: str
    exit_code: int
    seconds: float
    output_tail: str  # masked
    log_path: str  # the whole (masked) output, on the worker that ran it
    host: str = ""
    host_queue: str = ""  # the queue of the worker that ran it, where its checkout and reports are


@dataclass(frozen=True)
class CommandSecrets:
    """The secrets an operator lets specs hand to their commands by name (`secretEnv`): worker environment
    variables listed in AICD_COMMAND_SECRET_ENV, and the files of AICD_COMMAND_SECRET_DIR (a file's name is
    the secret's name; one trailing newline is dropped). Read at each use, so a rotated file takes effect
    without a restart."""

    env_names: frozenset[str] = frozenset()
    directory: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CommandSecrets:
        environ = os.environ if environ is None else environ
        names = frozenset(re.split(r"[\s,]+", environ.get(SECRET_ENV_NAMES_ENV, "").strip())) - {""}
        directory = environ.get(SECRET_DIR_ENV) or None
        return cls(names, Path(directory) if directory else None)

    def value(self, name: str) -> str | None:
        """The secret's value, or None when this worker does not allow (or hold) it."""
        if not SECRET_NAME.fullmatch(name):
            return None
        if name in self.env_names and name in os.environ:
            return remember_secret(os.environ[name])
        if self.directory is None:
            return None
        root = self.directory.resolve()
        file = (self.directory / name).resolve()  # mounted Secrets are symlinks into the same directory
        if file.parent != root and root not in file.parents:
            return None
        try:
            text = file.read_bytes().decode()
        except (OSError, UnicodeDecodeError):
            return None
        text = text.removesuffix("\n").removesuffix("\r")
        # Masked from now on wherever this process redacts (logs, failures), a file added or rotated later too.
        return None if "\0" in text else remember_secret(text)

    def names(self) -> list[str]:
        names = set(self.env_names)
        if self.directory is not None and self.directory.is_dir():
            names.update(p.name for p in self.directory.iterdir() if SECRET_NAME.fullmatch(p.name))
        return sorted(names)

    def values(self) -> list[str]:
        return [value for name in self.names() if (value := self.value(name))]


def command_env(request: CommandRequest, secrets: CommandSecrets) -> dict[str, str]:
    """The command's whole environment (see the module docstring)."""
    env = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(request.env)
    missing = []
    for name in request.secret_env:
        value = secrets.value(name)
        if value is None:
            missing.append(name)
        else:
            env[name] = value
    if missing:
        raise ApplicationError(
            f"{request.name}: secretEnv {missing} not allowed on this worker: list worker variables in"
            f" {SECRET_ENV_NAMES_ENV} or put files of those names in {SECRET_DIR_ENV}",
            non_retryable=True,
            type=ErrorType.COMMAND_SECRET_MISSING,
        )
    env.update(
        {
            "AICD_DELIVERY": request.delivery_id,
            "AICD_REVISION": request.revision,
            "AICD_ARTIFACT": request.artifact,
        }
    )
    return env


REPORTS_DIR_ENV = "AICD_REPORTS_DIR"


def reports_dir(state_dir: Path, delivery_id: str) -> Path:
    """Where a delivery's commands leave JSON reports for the policy gate (on the worker that ran them)."""
    return state_dir / "reports" / delivery_id


class CommandActivities:
    def __init__(self, state_dir: Path, secrets: CommandSecrets | None = None, host_queue: str = "") -> None:
        self.state_dir = state_dir
        self.secrets = secrets if secrets is not None else CommandSecrets.from_env()
        self.host_queue = host_queue

    def _checkout(self, request: CommandRequest) -> Path:
        """The delivery's source checkout, made once (idempotent across retries and workers)."""
        workdir = self.state_dir / "work" / request.delivery_id / "source"
        marker = workdir.parent / "checkout.done"
        if marker.exists():
            return workdir
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        try:
            repo = git.Repo.clone_from(request.source_repo, workdir, no_checkout=True)
            repo.git.checkout("--detach", "--quiet", request.revision)
        except git.GitCommandError as error:
            message = (error.stderr or str(error)).strip()
            raise ApplicationError(
                redact_credentials(
                    f"cannot check out {request.revision} of {request.source_repo}: {message}"
                ),
                type=ErrorType.SOURCE_UNAVAILABLE,
            ) from None  # the cause's text (the git command line) would carry the URL unredacted
        marker.write_text(request.revision)
        return workdir

    @activity.defn(name="run_command")
    async def run_command(self, request: CommandRequest) -> CommandResult:
        leftover = [name for arg in [*request.argv, *request.env.values()] for name in placeholders_in(arg)]
        if leftover:
            raise ApplicationError(
                f"{request.name}: placeholders {leftover} have no value for a command",
                non_retryable=True,
                type=ErrorType.COMMAND_INVALID,
            )
        env = command_env(request, self.secrets)
        # Reports the command writes here (a Trivy JSON report, an SBOM) go into the policy gate's input.
        reports = reports_dir(self.state_dir, request.delivery_id)
        for directory in (reports.parent, reports):  # only the worker's user: scanners' findings, SBOMs
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
        env[REPORTS_DIR_ENV] = str(reports)
        # Every secret this worker holds, not only the ones this command was given: a command can read files.
        mask = process_mask(extra=self.secrets.values())
        workdir = await asyncio.to_thread(self._checkout, request)
        log_dir = self.state_dir / "logs" / request.delivery_id
        # Only the worker's user reads them: a log holds URL credentials a command printed (the tail that
        # travels is redacted; the whole output is kept as it was, secrets the worker holds masked).
        for directory in (log_dir.parent, log_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)  # one made by an older worker
        log_path = log_dir / f"{request.name}.log"
        host = socket.gethostname()
        started = time.monotonic()
        private = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(private, 0o600)  # a log left by an older run keeps its mode on open
        with open(private, "wb") as log_file:
            try:
                process = await asyncio.create_subprocess_exec(
                    *request.argv,
                    cwd=workdir,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # its own process group, so we can kill all of it
                )
            except (FileNotFoundError, PermissionError) as error:
                raise ApplicationError(
                    f"{request.name}: cannot run {request.argv[0]!r}: {error.strerror}",
                    non_retryable=True,
                    type=ErrorType.COMMAND_FAILED,
                ) from None
            assert process.stdout is not None
            copying = asyncio.create_task(_copy_masked(process.stdout, mask, log_file.write))
            try:
                exit_code = await self._wait(process, request, f"{host}:{log_path}")
            finally:
                if process.returncode is None:
                    _kill_group(process.pid)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(process.wait(), 5)
                # A grandchild that left the process group may hold the output open: stop reading after a while.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(copying), OUTPUT_DRAIN_S)
                copying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await copying
        seconds = time.monotonic() - started
        tail, cut = _tail(log_path)
        tail = redact_cut(tail, mask) if cut else redact(tail, mask)
        result = CommandResult(request.name, exit_code, seconds, tail, str(log_path), host, self.host_queue)
        if exit_code != 0:
            raise ApplicationError(
                f"{request.name} exited with {exit_code} after {seconds:.1f}s (whole output: {host}:{log_path});"
                f" output tail:\n{tail}",
                result,
                non_retryable=True,
                type=ErrorType.COMMAND_FAILED,
            )
        return result

    async def _wait(self, process: asyncio.subprocess.Process, request: CommandRequest, log: str) -> int:
        deadline = time.monotonic() + request.timeout_s
        while True:
            activity.heartbeat(request.name)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill_group(process.pid)
                await process.wait()
                raise ApplicationError(
                    f"{request.name} timed out after {request.timeout_s:.0f}s (output so far: {log})",
                    non_retryable=True,
                    type=ErrorType.COMMAND_TIMEOUT,
                )
            try:
                return await asyncio.wait_for(process.wait(), min(HEARTBEAT_EVERY_S, remaining))
            except TimeoutError:
                continue


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _copy_masked(
    stream: asyncio.StreamReader, mask: SecretMask, write: Callable[[bytes], object]
) -> None:
    output = mask.writer(write)
    try:
        while chunk := await stream.read(READ_CHUNK_BYTES):
            output.write(chunk)
    finally:
        output.close()


def _tail(path: Path) -> tuple[str, bool]:
    """The last OUTPUT_TAIL_BYTES of the log, and whether that cut anything away at the front."""
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(max(0, size - OUTPUT_TAIL_BYTES))
        return file.read().decode("utf-8", errors="replace"), size > OUTPUT_TAIL_BYTES
