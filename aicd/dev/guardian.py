"""The embedded stack's guardian: stops the stack's processes when the process that started them dies
without stopping them (SIGKILL, the OOM killer, a closed terminal's SIGHUP), so no Temporal, worker or
dashboard runs on unowned.

Run as ``python -m aicd.dev.guardian`` by :class:`aicd.dev.processes.Lifeline`, in a session of its own and
with the read end of a pipe as its stdin. Each line names a process group to guard (``+PID START``, START
being the leader's start time, so a reused pid is never taken for it) or one stopped by its owner
(``-PID``). End of input means the owner is gone, whether it closed the pipe or died (the kernel closes a
dead process's descriptors): every guarded group still led by the process it names gets SIGTERM, and SIGKILL
after a grace period.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterable

import psutil

from aicd.dev.processes import signal_group

GRACE_S = 10.0  # as ManagedProcess.stop gives Prometheus: time for a clean shutdown


def parse(lines: Iterable[str]) -> dict[int, float]:
    """The groups still guarded once `lines` are read: leader pid -> its start time."""
    guarded: dict[int, float] = {}
    for line in lines:
        sign, _, rest = line.strip().partition(" ")
        if sign.startswith("+"):
            guarded[int(sign[1:])] = float(rest)
        elif sign.startswith("-"):
            guarded.pop(int(sign[1:]), None)
    return guarded


def leader(pid: int, started: float) -> psutil.Process | None:
    """The guarded leader, if it still runs (a zombie or a newer process with the same pid is not it)."""
    try:
        process = psutil.Process(pid)
        if process.create_time() != started or process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return process


def stop_groups(guarded: dict[int, float], grace: float = GRACE_S) -> list[int]:
    """SIGTERM each guarded group whose leader still runs, SIGKILL those left after `grace`; the pids signalled."""
    leaders = {pid: process for pid, started in guarded.items() if (process := leader(pid, started))}
    for pid in leaders:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(leader(pid, guarded[pid]) for pid in leaders):
        time.sleep(0.1)
    for pid in leaders:
        signal_group(pid, signal.SIGKILL)  # members of a group may outlive its leader
    return sorted(leaders)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the end of its input stops the guard
    guarded = parse(sys.stdin)
    stop_groups(guarded)


if __name__ == "__main__":
    main()
