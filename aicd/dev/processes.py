"""Child processes of the embedded stack: each in its own process group, always stopped as a group.

Every process we start gets its own session (so a Ctrl-C in the terminal does not hit it half-way and
killing it takes its own children with it) and is stopped with SIGTERM to the whole group, then SIGKILL
after a grace period, then reaped, so a stopped stack leaves neither orphans nor zombies. While any runs, a
guardian process (:mod:`aicd.dev.guardian`) stops them if this process dies without doing so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


class ManagedProcess:
    """One child process in its own process group, output appended to `log_path`."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = list(argv)
        self._pass_fds = tuple(pass_fds)  # inherited by the child (e.g. a socket bound for it)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        if self._popen is not None:
            raise RuntimeError(f"already started: {self.argv[0]}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,  # own session and process group: pgid == pid
            close_fds=True,
            pass_fds=self._pass_fds,
        )
        try:
            LIFELINE.guard(self._popen)
        except (OSError, RuntimeError):
            self.stop()  # a process nothing would stop if we died must not run
            raise
        return self

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError("not started")
        return self._popen.pid

    def returncode(self) -> int | None:
        """None while running (or never started); the exit status once it has exited (reaped here)."""
        return None if self._popen is None else self._popen.poll()

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, max_chars: int = 400) -> str:
        try:
            data = self.log_path.read_bytes()[-max_chars:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds, reap; returns the exit status."""
        popen = self._popen
        if popen is None:
            return None
        try:
            if popen.poll() is None:
                signal_group(popen.pid, signal.SIGTERM)
                try:
                    popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    signal_group(popen.pid, signal.SIGKILL)
                    popen.wait(timeout=5.0)
            # The leader may be gone while members of its group live on: make sure they go too.
            signal_group(popen.pid, signal.SIGKILL)
            LIFELINE.release(popen)
            return popen.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Lifeline:
    """This process's line to its guardian (:mod:`aicd.dev.guardian`): the groups it started and has not
    stopped are written to the guardian's stdin; when this process dies, however it dies, the kernel closes
    the pipe and the guardian stops them. The guardian runs only while there is something to guard, so a
    stopped stack leaves no process behind, the guardian included."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guardian: subprocess.Popen[bytes] | None = None
        self._guarded: dict[int, subprocess.Popen[bytes]] = {}

    def guard(self, popen: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._guarded[popen.pid] = popen
            try:
                self._send(f"+{popen.pid} {_start_time(popen.pid)}")
            except (OSError, RuntimeError):
                del self._guarded[popen.pid]
                raise

    def release(self, popen: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._guarded.get(popen.pid) is not popen:
                return
            # Children that ended and were reaped without stop() (a caller's own kill) go too.
            ended = [
                pid for pid, child in self._guarded.items() if child is popen or child.poll() is not None
            ]
            for pid in ended:
                del self._guarded[pid]
            if not self._guarded:
                self._close()
                return
            # Stopped either way: a guardian that cannot be told would only find its leader gone.
            with contextlib.suppress(OSError, RuntimeError):
                self._send("".join(f"-{pid}\n" for pid in ended).rstrip("\n"))

    def guardian_pid(self) -> int | None:
        with self._lock:
            return None if self._guardian is None else self._guardian.pid

    def _send(self, lines: str) -> None:
        for _ in range(2):
            guardian = self._guardian
            if guardian is None or guardian.poll() is not None or guardian.stdin is None:
                guardian = self._spawn()
                lines = "\n".join(f"+{pid} {_start_time(pid)}" for pid in self._guarded)
            try:
                guardian.stdin.write(f"{lines}\n".encode())  # type: ignore[union-attr]
                guardian.stdin.flush()  # type: ignore[union-attr]
                return
            except (BrokenPipeError, ValueError):
                self._guardian = None  # it died: a new one gets the whole list
        raise RuntimeError("the embedded stack's guardian process does not start")

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._guardian = subprocess.Popen(
            [sys.executable, "-m", "aicd.dev.guardian"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or SIGHUP meant for us must not take it down with us
            close_fds=True,
        )
        return self._guardian

    def _close(self) -> None:
        guardian, self._guardian = self._guardian, None
        if guardian is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if guardian.stdin is not None:
                guardian.stdin.close()  # nothing is guarded: it exits at once
        try:
            guardian.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            guardian.kill()
            guardian.wait()


def _start_time(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0  # already gone and reaped: the guardian will find no such leader


LIFELINE = Lifeline()


def pid_alive(pid: object) -> bool:
    """Whether a process with this pid exists (a pid read from a file may be anything)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to process group `pgid`; a group that no longer exists is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_gone(pids: Sequence[int], timeout: float = 5.0) -> list[int]:
    """Wait until none of `pids` runs any more; returns those still running after `timeout`."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
