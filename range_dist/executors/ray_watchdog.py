"""Shuts a local Ray down with the driver that started it, even when the driver is SIGKILLed.

Ray's own fate sharing ends the raylet and the workers when the driver dies, but its agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) were seen to stay alive, re-parented to init:
their parent check exits through the dead GCS and hangs. The driver starts this small process
(``python -m range_dist.executors.ray_watchdog``) right after ``ray.init`` with the pids of the
processes that instance started, and holds the write end of its stdin. When the driver ends, in
any way, the kernel closes that pipe: the watchdog wakes and ends every listed process still
alive (same pid and start time, so a reused pid is never touched) and every process that names
the instance's raylet in its ``RAY_RAYLET_PID``. It does not import ray.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from range_dist.util.lease import pid_runs


def _environ_names_raylet(pid: int, raylet_pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"RAY_RAYLET_PID={raylet_pid}".encode() in fh.read().split(b"\0")
    except OSError:
        return False


def leftovers(started: list[tuple[int, float]], raylet_pid: int | None) -> list[int]:
    """Pids still alive among ``started`` (pid, create time), plus the agents of ``raylet_pid``."""
    import psutil

    alive = []
    for pid, created in started:
        try:
            if abs(psutil.Process(pid).create_time() - created) < 0.01:
                alive.append(pid)
        except psutil.Error:
            continue
    if raylet_pid is not None:
        for proc in psutil.process_iter(["pid"]):
            if proc.pid not in alive and proc.pid != os.getpid() and _environ_names_raylet(proc.pid, raylet_pid):
                alive.append(proc.pid)
    return alive


def end(pids: list[int], grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s`` for those that did not end."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue
        deadline = time.time() + grace_s
        while sig == signal.SIGTERM and time.time() < deadline:
            if not any(pid_runs(p) for p in pids):
                return
            time.sleep(0.1)


def main() -> None:
    spec = json.loads(sys.argv[1])
    started = [(int(p), float(t)) for p, t in spec["started"]]
    raylet_pid = spec.get("raylet_pid")
    sys.stdin.buffer.read()  # returns when the driver closes the pipe: it ended
    time.sleep(1.0)  # a normal ray.shutdown() may still be finishing
    end(leftovers(started, raylet_pid))


if __name__ == "__main__":
    main()
