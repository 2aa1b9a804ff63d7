"""Run the service as a child process on a free loopback port: for tests, benchmarks, notebooks.

Also: raw-socket helpers (raw_connection, read_raw_response) for requests http.client will not send
(half a body, a lying or doubled Content-Length), and peak_rss_kib to measure a worker's memory."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from service.settings import DEFAULT_HOST


def free_loopback_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the OS picks it; tiny race until the server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((DEFAULT_HOST, 0))
        return s.getsockname()[1]


def _get_json(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


class ServiceProcess:
    """`python -m service ARGS` on a free loopback port, as a child process.

        with ServiceProcess(["--tokenizer", path, "--workers", "2"]) as svc:
            TokenizerClient(svc.url).encode("hello")

    Exiting the block sends SIGTERM (the graceful shutdown a service manager would use).
    The server's log goes to a temporary file (a pipe nobody reads could fill up and block it).
    """

    def __init__(
        self,
        args: list[str],
        *,
        port: int | None = None,
        ready_timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host, self.port = DEFAULT_HOST, port or free_loopback_port()
        self._port_chosen_here = port is None
        self.url = f"http://{self.host}:{self.port}"
        self.args, self.ready_timeout, self.env = list(args), ready_timeout, env
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> ServiceProcess:
        # A port picked by free_loopback_port() can be taken by someone else before the server binds
        # it; then the server exits with "address already in use" and we try another port.
        for attempt in range(3):
            self._log = tempfile.TemporaryFile(mode="w+b")
            cmd = [sys.executable, "-m", "service", *self.args, "--host", self.host, "--port", str(self.port)]
            self.process = subprocess.Popen(
                cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})}
            )
            try:
                self.wait_ready()
                return self
            except RuntimeError:
                if not self._port_chosen_here or attempt == 2 or "address already in use" not in self.log().lower():
                    raise
                self._log.close()
                self.port = free_loopback_port()
                self.url = f"http://{self.host}:{self.port}"
        raise AssertionError("unreachable")

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def wait_ready(self) -> dict[str, Any]:
        """Poll /healthz until it answers 200; fail early (with the server's log) if the process dies."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, body = _get_json(self.host, self.port, "/healthz")
                if status == 200:
                    return body
            except (OSError, ValueError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"service not ready after {self.ready_timeout}s:\n{self.log()}")
            time.sleep(0.1)

    def worker_pids(self, expected: int, timeout: float = 20.0) -> set[int]:
        """Worker pids seen answering /healthz on fresh connections, until `expected` are seen (or timeout).
        A worker answers only once its app (and tokenizer) is loaded, so this doubles as "all ready"."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            try:
                status, body = _get_json(self.host, self.port, "/healthz")
                if status == 200:
                    seen.add(body["worker_pid"])
            except (OSError, ValueError, http.client.HTTPException):
                time.sleep(0.05)
        return seen

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for the graceful exit; SIGKILL only if it hangs. Returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()


@dataclasses.dataclass
class RawResponse:
    """One HTTP response read off a raw socket, and whether the server closed the connection after it."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    closed: bool

    def json(self) -> Any:
        return json.loads(self.body)


def raw_connection(svc: ServiceProcess, timeout: float = 10.0) -> socket.socket:
    """A plain TCP connection to the service, for requests http.client would refuse to send (a lying
    Content-Length, half a body, two Content-Length headers)."""
    return socket.create_connection((svc.host, svc.port), timeout=timeout)


def read_raw_response(sock: socket.socket, timeout: float = 10.0, close_wait: float = 0.5) -> RawResponse:
    """Read one response from `sock` (TimeoutError if none comes within `timeout` seconds), then wait up
    to `close_wait` seconds to see whether the server closes the connection (EOF, or a reset)."""
    sock.settimeout(timeout)
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    body = resp.read()
    sock.settimeout(close_wait)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    except ConnectionResetError:
        closed = True
    return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, closed)


def peak_rss_kib(pid: int) -> int:
    """The most resident memory process `pid` has had so far (Linux VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")
