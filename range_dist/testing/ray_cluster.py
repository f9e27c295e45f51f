"""A real multi-node Ray cluster on one machine, for tests: a head and worker nodes started with ``ray start``.

Every node is its own ``ray start --block`` process group (its own raylet, object store and
workers), started through the ``ray`` CLI beside this Python (range_dist imports ray only in
:mod:`range_dist.executors.ray_executor`). Worker nodes get their own CPUs and a custom resource
(``range_node_<name>``) so that a test can tell, and steer, where actors land. Each node's raylet
process id is recorded, so that a test can kill exactly one node (:meth:`LocalRayCluster.kill_node`).

Nothing here touches Ray instances that this module did not start: every port is chosen free,
each cluster has its own temp dir, and teardown ends its own process groups by id (never
``ray stop``, which ends every Ray of the machine's user).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from range_dist.errors import RangeDistError

BIN = Path(sys.executable).parent

# GCS declares a node dead after `period × threshold` of failed health checks (Ray's defaults make
# that ~15-30 s); a test that kills a raylet wants the run to notice within seconds, yet a loaded
# 2-core machine must not fail a healthy node, hence 1 s × 5.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "5",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports (bound together, so the OS cannot hand out one twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


@dataclass
class RayNode:
    """One node of the cluster: its ``ray start --block`` process and what it is known by.

    Attributes:
        name: ``head`` or the worker's name (its custom resource is ``range_node_<name>``).
        process: the ``ray start --block`` process (leader of the node's process group).
        raylet_pid: the node's raylet process id (kill it to lose the node).
        node_id: Ray's node id (hex), once the node has registered with the head.
        log: where the node's ``ray start`` output goes.
    """

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    raylet_pid: int | None = None
    node_id: str | None = None

    @property
    def resource(self) -> str:
        """The custom resource only this node has."""
        return f"range_node_{self.name}"


@dataclass
class LocalRayCluster:
    """A head (``head_cpus`` CPUs) and one worker node per name in ``workers`` (``worker_cpus`` each).

    Use as a context manager (or call :meth:`start` and :meth:`stop`)::

        with LocalRayCluster(workers=("a", "b")) as cluster:
            subprocess.run(["ray", "job", "submit", "--address", cluster.dashboard_url, ...])
            cluster.kill_node("a")

    Attributes:
        workers: worker node names.
        head_cpus, worker_cpus: logical CPUs per node (0 on the head keeps actors off it).
        object_store_mb: object store size per node, MiB.
        env: extra environment for every node (their workers inherit it).
        startup_timeout: seconds to wait for every node to be alive.
    """

    workers: tuple[str, ...] = ("a", "b")
    head_cpus: int = 0
    worker_cpus: int = 1
    object_store_mb: int = 200
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 180.0
    nodes: dict[str, RayNode] = field(default_factory=dict, init=False)
    gcs_port: int = field(default=0, init=False)
    dashboard_port: int = field(default=0, init=False)
    temp_dir: Path = field(default=Path(), init=False)
    _used_ports: set[int] = field(default_factory=set, init=False, repr=False)

    # ------------------------------------------------------------------ addresses
    @property
    def gcs_address(self) -> str:
        """``127.0.0.1:<port>``: what ``ray start --address`` and ``ray.init`` join."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """``http://127.0.0.1:<port>``: what ``ray job submit --address`` talks to."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def process_env(self) -> dict[str, str]:
        """The environment the nodes run with (and a ``ray job submit`` to them should use)."""
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0", **FAST_HEALTH_CHECKS, **self.env}
        env.pop("RAY_ADDRESS", None)  # a node must not join whatever cluster the caller is in
        return env

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> LocalRayCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start the head, then the workers, and wait until every node is alive with its raylet known.

        Raises:
            RangeDistError: the ``ray`` CLI is missing, or a node did not come up in time (the
                nodes already started are stopped first; the message ends with the node's log).
        """
        if shutil.which("ray", path=str(BIN)) is None:
            raise RangeDistError(f"the ray CLI is not installed beside this Python ({BIN})")
        # a short path: Ray's Unix sockets live under it and socket paths are limited to 107 bytes
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rdray", dir="/tmp"))
        self.gcs_port, self.dashboard_port, client_port = self._ports(3)
        try:
            self._start_node("head", [
                "--head", f"--port={self.gcs_port}", f"--num-cpus={self.head_cpus}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={client_port}",
            ])
            self._wait_for_dashboard()
            for name in self.workers:
                self._start_worker(name)
            self._wait_for_nodes()
        except BaseException:
            self.stop()
            raise

    def _start_node(self, name: str, args: list[str]) -> None:
        log = self.temp_dir / f"{name}.log"
        # every port a node opens is chosen here: fixed defaults (52365, 10001, 8265) would collide
        # with other Ray instances on the machine
        names = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
                 "runtime-env-agent")
        ports = [f"--{n}-port={p}" for n, p in zip(names, self._ports(len(names)), strict=True)]
        # a temp dir per node: nodes sharing one would race for the same socket and log file names
        temp = self.temp_dir / name
        temp.mkdir()
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
               f"--object-store-memory={self.object_store_mb * 2**20}", "--disable-usage-stats", *args, *ports]
        with open(log, "wb") as fh:
            # its own session: the node's processes form one group that teardown can end by its id
            process = subprocess.Popen(cmd, env=self.process_env(), stdout=fh, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.nodes[name] = RayNode(name, process, log)

    def _ports(self, count: int) -> list[int]:
        """``count`` free ports that this cluster has not handed out before (a port a node has not
        bound yet looks free again, and two nodes given the same one would collide)."""
        while True:
            ports = free_ports(count)
            if not self._used_ports.intersection(ports):
                self._used_ports.update(ports)
                return ports

    def _wait_for_dashboard(self) -> None:
        deadline = time.time() + self.startup_timeout
        head = self.nodes["head"]
        while True:
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2):
                    return
            except OSError:
                self._check_alive(head, deadline, "its dashboard")
                time.sleep(0.5)

    def _wait_for_nodes(self, stale: frozenset[str] = frozenset()) -> None:
        """Wait until every node is alive; ``stale``: ids of lost nodes that GCS may still list alive."""
        deadline = time.time() + self.startup_timeout
        while True:
            for node in self.nodes.values():
                self._check_alive(node, deadline, "its raylet")
                if node.raylet_pid is None:
                    node.raylet_pid = _raylet_of(node.process.pid)
            if all(n.raylet_pid is not None for n in self.nodes.values()):
                alive = {nid: res for nid, res in self.alive_nodes().items() if nid not in stale}
                by_resource = {r: nid for nid, res in alive.items() for r in res if r.startswith("range_node_")}
                if len(alive) == len(self.nodes) and all(n.resource in by_resource for n in self.workers_nodes()):
                    for node in self.workers_nodes():
                        node.node_id = by_resource[node.resource]
                    self.nodes["head"].node_id = next(nid for nid, res in alive.items()
                                                      if not any(r.startswith("range_node_") for r in res))
                    return
            time.sleep(0.5)

    def _check_alive(self, node: RayNode, deadline: float, what: str) -> None:
        if node.process.poll() is not None or time.time() > deadline:
            why = "exited" if node.process.poll() is not None else f"did not start {what} in {self.startup_timeout:g} s"
            tail = node.log.read_text(errors="replace")[-3000:] if node.log.exists() else ""
            raise RangeDistError(f"Ray node {node.name!r} {why}: {tail}")

    def restart_node(self, name: str) -> RayNode:
        """Start worker ``name`` again (after :meth:`kill_node`): a fresh node with the same resource."""
        old = self.nodes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old.process.pid, signal.SIGKILL)
        _end_session(old.process, 0.1)
        shutil.rmtree(self.temp_dir / name, ignore_errors=True)
        self._start_worker(name)
        self._wait_for_nodes(frozenset({old.node_id}) if old.node_id else frozenset())
        return self.nodes[name]

    def _start_worker(self, name: str) -> None:
        self._start_node(name, [f"--address={self.gcs_address}", f"--num-cpus={self.worker_cpus}",
                                f"--resources={json.dumps({f'range_node_{name}': 1})}"])

    def workers_nodes(self) -> list[RayNode]:
        """The worker nodes (every node but the head)."""
        return [n for n in self.nodes.values() if n.name != "head"]

    def alive_nodes(self) -> dict[str, dict[str, float]]:
        """Node id → total resources, for every node the head's state API reports alive."""
        url = f"{self.dashboard_url}/api/v0/nodes?detail=1&limit=100"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except OSError:
            return {}
        rows = body.get("data", {}).get("result", {}).get("result", [])
        return {r["node_id"]: r.get("resources_total", {}) for r in rows if r.get("state") == "ALIVE"}

    def kill_node(self, name: str) -> int:
        """SIGKILL one node's raylet by its process id (a lost machine); returns that pid.

        The node's other processes (its workers, its ``ray start --block``) notice and end on their
        own; :meth:`stop` ends whatever is left of the group.
        """
        node = self.nodes[name]
        assert node.raylet_pid is not None
        os.kill(node.raylet_pid, signal.SIGKILL)
        return node.raylet_pid

    def stop(self) -> None:
        """End every node's process group and remove the temp dir (all nodes at once: each takes seconds)."""
        for node in self.nodes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGTERM)  # `ray start --block` then stops its node
        deadline = time.time() + 5  # a test cluster keeps nothing: a short grace, then SIGKILL
        for node in self.nodes.values():
            _end_session(node.process, max(0.1, deadline - time.time()))
        # `ray start --head` records the head here; a bare ray.init() elsewhere would try to join it
        record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        try:
            if self.gcs_port and record.read_text().strip().endswith(f":{self.gcs_port}"):
                record.unlink()
        except OSError:
            pass
        if self.temp_dir != Path() and self.temp_dir.exists():
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _raylet_of(pid: int) -> int | None:
    """The raylet among the descendants of ``ray start`` process ``pid`` (None until it runs)."""
    import psutil

    try:
        for child in psutil.Process(pid).children(recursive=True):
            if child.name() == "raylet":
                return int(child.pid)
    except psutil.Error:
        return None
    return None


def _end_session(process: subprocess.Popen[Any], timeout: float) -> None:
    """Wait up to ``timeout`` s for ``process`` (a ``ray start --block``), then SIGKILL its whole session."""
    import psutil

    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    # whatever is left of the node's session (workers that outlived their raylet, in whatever
    # process group Ray put them): the session id is the `ray start` process id
    for _ in range(20):
        left = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == process.pid:
                    p.kill()
                    left.append(p)
            except (psutil.Error, OSError):
                continue
        if not left:
            break
        psutil.wait_procs(left, timeout=2)
    process.wait()
