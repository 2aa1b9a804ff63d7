"""A real Ray cluster on loopback for the tests and the benchmarks: a head node and more nodes, each its
own raylet, started with `ray start` as an operator would, and stopped by killing exactly the processes
they started (never `ray stop`, which stops every Ray process of the machine).

Every port is chosen free, so the cluster cannot collide with another one on the same machine, and all
of its state lives in a temporary directory of its own (`--temp-dir`), deleted when it stops: a short path
under /tmp, because Ray puts unix sockets there and a socket's path may not exceed 107 bytes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, closing
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")
OBJECT_STORE_BYTES = 100 * 1024 * 1024   # small: tasks pass plans and counts, the data goes through files


def free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(closing(socket.socket())) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class LocalRayCluster:
    """`nodes` raylets on 127.0.0.1 with `cpus` CPUs each; `address` is what RAY_ADDRESS takes."""

    def __init__(self, nodes: int = 2, cpus: int = 1):
        self.cpus = cpus
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self.groups: list[int] = []       # the process group of each `ray start`: its daemons live in it
        self.nodes = nodes
        self.address = ""

    def _ray_start(self, *args: str) -> None:
        ports = free_ports(6)
        cmd = [RAY, "start", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
               f"--object-store-memory={OBJECT_STORE_BYTES}",
               f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
               f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
               f"--runtime-env-agent-port={ports[4]}", f"--metrics-export-port={ports[5]}", *args]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        # a new session: the daemons `ray start` leaves behind share its process group, which is how
        # they are found (and only they) when the cluster is stopped
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        self.groups.append(proc.pid)
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}")

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LocalRayCluster:
        port, dashboard = free_ports(2)
        self._ray_start("--head", f"--port={port}", f"--dashboard-port={dashboard}", "--include-dashboard=false",
                        "--disable-usage-stats", f"--temp-dir={self.temp_dir}")
        self.address = f"127.0.0.1:{port}"
        for _ in range(self.nodes - 1):
            self._ray_start(f"--address={self.address}")
        return self

    def raylets(self) -> list[psutil.Process]:
        found = []
        for proc in self.processes():
            try:
                if proc.name() == "raylet":
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return found

    def processes(self) -> list[psutil.Process]:
        """Everything this cluster runs: the daemons of each `ray start`, and their children (the worker
        processes, which a raylet starts in sessions of their own)."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) in self.groups:
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
            except (psutil.Error, OSError):   # the process ended meanwhile
                continue
        return list(found.values())

    def running(self, task: str) -> list[int]:
        """PIDs of the worker processes running `task` now (a worker is titled `ray::<task>` meanwhile)."""
        pids = []
        for proc in self.processes():
            try:
                if proc.cmdline()[:1] == [f"ray::{task}"]:
                    pids.append(proc.pid)
            except (psutil.Error, OSError):
                continue
        return pids

    def wait_idle(self, task: str, timeout: float = 30) -> None:
        """Until no worker runs `task`: after its driver is killed, Ray ends the job's workers, not at once."""
        deadline = time.monotonic() + timeout
        while self.running(task):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers still running {task} after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill every process of the cluster by PID, and wait until none is left."""
        procs = self.processes()
        for sig, grace in ((signal.SIGTERM, 1), (signal.SIGKILL, 10)):
            for p in procs:
                try:
                    p.send_signal(sig)
                except psutil.Error:
                    pass
            _, procs = psutil.wait_procs(procs, timeout=grace)
            if not procs:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                return
        raise RuntimeError(f"Ray processes still alive after SIGKILL: {[p.pid for p in procs]}")


class TaskWatcher:
    """Watches the cluster for worker processes running the tasks named (Ray titles a worker process
    `ray::<task>` while it runs one) and records which raylet each belongs to. With `kill`, SIGKILLs the
    first one it sees for each name, by PID, while the task runs: a worker dying mid-task."""

    def __init__(self, cluster: LocalRayCluster, names: tuple[str, ...], kill: bool = False):
        self.cluster, self.names, self.kill = cluster, names, kill
        self.seen: dict[str, set[int]] = {name: set() for name in names}    # task -> raylet pids
        self.killed: dict[str, int] = {}                                    # task -> pid killed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:   # re-raised by __exit__: a watcher that died must not pass unseen
            self._error = exc

    def _watch(self) -> None:
        raylets = {p.pid for p in self.cluster.raylets()}
        while not self._stop.is_set():
            for raylet in raylets:
                try:
                    children = psutil.Process(raylet).children()
                except (psutil.Error, OSError):   # a child that ends while psutil reads /proc: OSError
                    continue
                for child in children:
                    try:
                        title = " ".join(child.cmdline())
                    except (psutil.Error, OSError):
                        continue
                    name = title.removeprefix("ray::").split()[0] if title.startswith("ray::") else ""
                    if name in self.seen:
                        self.seen[name].add(raylet)
                        if self.kill and name not in self.killed:
                            try:
                                os.kill(child.pid, signal.SIGKILL)
                            except ProcessLookupError:   # it had just finished: the next one
                                continue
                            self.killed[name] = child.pid
            time.sleep(0.003)

    def __enter__(self) -> TaskWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise RuntimeError("the task watcher stopped on an error") from self._error
