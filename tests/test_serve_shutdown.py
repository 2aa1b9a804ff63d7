"""SIGTERM with requests in progress, on a real `python -m service` process and real sockets.

What is promised (docs/service.md, "Tokenisation service"): requests in progress finish if they can within
`shutdown_timeout`; a request that arrives while the service drains, and one that could not finish in
time, is answered 503 {"error": "shutting_down"} with Connection: close, never a 500; the process exits
0 without waiting out the timeout once nothing is in progress. The slow request is real work: distinct
digit runs, the input BPE is slowest on (see test_serve_limits.py).
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import subprocess
import time

import psutil
import pytest

from harness.service_process import ServiceProcess


def digit_runs(n_chars: int, run: int = 65536, seed: int = 0) -> str:
    """Distinct random digit runs: ~2.5 us of CPU per character (test_serve_limits.py)."""
    rnd = random.Random(seed)
    return " ".join("".join(rnd.choices("0123456789", k=run)) for _ in range(n_chars // (run + 1)))


def start_request(svc, path: str, payload) -> http.client.HTTPConnection:
    """Send a whole request and return without reading the answer (conn.getresponse() later)."""
    conn = http.client.HTTPConnection(svc.host, svc.port, timeout=60)
    conn.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    return conn


def answer(conn: http.client.HTTPConnection) -> tuple[int, dict, dict]:
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}


def wait_exit(svc, timeout: float) -> int:
    try:
        return svc.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server still running {timeout} s after SIGTERM:\n{svc.log()}")


def service_args(gpt2_files, workers: int, shutdown_timeout: float) -> list[str]:
    return ["--gpt2", *map(str, gpt2_files), "--workers", str(workers), "--log-level", "warning",
            "--shutdown-timeout", str(shutdown_timeout), "--max-cpu-seconds", "60"]


def test_in_flight_request_finishes_and_new_requests_get_503(gpt2_files):
    """One worker: a ~1.2 s encode is in progress at SIGTERM. While it runs, a new connection is still
    accepted and answered 503 shutting_down; the encode then finishes with 200, and the process exits 0
    right after it (not after the 30 s shutdown_timeout)."""
    with ServiceProcess(service_args(gpt2_files, workers=1, shutdown_timeout=30)) as svc:
        slow = start_request(svc, "/v1/count", {"text": digit_runs(500_000)})
        time.sleep(0.3)  # the encode is running in the worker
        t0 = time.monotonic()
        svc.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the worker is draining now
        status, body, headers = answer(start_request(svc, "/v1/count", {"text": "hello"}))
        assert status == 503 and body["error"] == "shutting_down", body
        assert set(body) == {"error", "message"} and headers["connection"] == "close"
        assert "x-tokenizer-fingerprint" in headers
        status, body, _ = answer(slow)
        assert status == 200 and body["count"] > 0, body
        assert wait_exit(svc, timeout=15) == 0, svc.log()
        assert time.monotonic() - t0 < 15
        assert "Traceback" not in svc.log(), svc.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_request_that_cannot_finish_gets_503_not_500(gpt2_files, workers):
    """An encode needing ~5 s of CPU is in progress at SIGTERM with shutdown_timeout=1: it is answered
    503 shutting_down about a second later (uvicorn alone cancelled it after its own timeout and
    answered a plain-text 500), its worker thread stops, and the service exits 0 without workers left."""
    with ServiceProcess(service_args(gpt2_files, workers=workers, shutdown_timeout=1)) as svc:
        if workers > 1:
            svc.worker_pids(workers)
        children = psutil.Process(svc.process.pid).children(recursive=True)
        slow = start_request(svc, "/v1/encode", {"texts": [digit_runs(1_000_000, seed=s) for s in range(2)]})
        time.sleep(0.5)
        t0 = time.monotonic()
        svc.process.send_signal(signal.SIGTERM)
        status, body, headers = answer(slow)
        answered = time.monotonic() - t0
        assert status == 503 and body["error"] == "shutting_down", body
        assert headers["connection"] == "close"
        # About shutdown_timeout after the signal (which reaches a worker of the multi-process server up
        # to 0.5 s later, the supervisor's poll); the slack is for a loaded machine.
        assert 0.9 < answered < 1 + 0.5 * (workers > 1) + 3, answered
        assert wait_exit(svc, timeout=10) == 0, svc.log()
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"worker processes left behind: {alive}"
        assert "Internal Server Error" not in svc.log()
