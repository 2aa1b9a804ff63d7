"""Stages that need the network fail like every stage: one `error:` line with the cause, status 2. And they
reach the network the way their users configured it: HTTPS_PROXY and HF_ENDPOINT are honoured (a proxy
running in this test sees the request; no real network is used)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest
from pipeline_helpers import write_recipe
from stage_helpers import REPO


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with_proxy(proxy: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("no_proxy", "http_proxy", "https_proxy", "all_proxy", "hf_hub_offline",
                                "hf_datasets_offline", "hf_endpoint")}
    return {**env, "HTTPS_PROXY": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "http_proxy": proxy, **extra}


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


class RefusingProxy:
    """An HTTP proxy on localhost that records each request line (`CONNECT host:443 HTTP/1.1`) and refuses."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy():
    p = RefusingProxy()
    yield p
    p.close()


def test_hellaswag_download_without_network_is_one_error_line(tmp_path):
    dest = tmp_path / "hs" / "hellaswag_val.jsonl"
    r = run("pipelines.hellaswag", str(dest), env=env_with_proxy(f"http://127.0.0.1:{closed_port()}"))
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: cannot download HellaSwag from https://raw.githubusercontent.com/")
    assert "Connection refused" in line and str(dest) in line
    assert not dest.parent.exists() or not any(dest.parent.iterdir())   # nothing half-downloaded


def test_hellaswag_goes_through_the_proxy(tmp_path, proxy):
    r = run("pipelines.hellaswag", str(tmp_path / "hs.jsonl"), env=env_with_proxy(proxy.url))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot download HellaSwag"), r.stderr
    assert [r.rsplit(" ", 1)[0] for r in proxy.requests] == ["CONNECT raw.githubusercontent.com:443"]


def test_make_hellaswag_runs_the_reported_command():
    venv = REPO / ".venv"
    show = f"{sys.executable} -c 'import sys; print(sys.argv[1:])'"
    r = subprocess.run(["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", "hellaswag",
                        f"PY={show}", "HELLASWAG=/nonexistent/hs.jsonl"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "['-m', 'pipelines.hellaswag', '/nonexistent/hs.jsonl']" in r.stdout


def test_hub_stream_probe_uses_the_proxy_and_the_endpoint(tmp_path, proxy):
    """`source = "hf"` asks the hub through huggingface_hub: the configured mirror, through the proxy."""
    recipe = write_recipe(tmp_path, name="hub", data={"source": "hf", "dataset": "HuggingFaceFW/fineweb-edu",
                                                      "config": "sample-10BT"})
    env = env_with_proxy(proxy.url, HF_ENDPOINT="https://hub-mirror.test", HF_HUB_CACHE=str(tmp_path / "cache"),
                         HF_HOME=str(tmp_path / "hf"))
    r = run("pipelines.data", "--config", str(recipe), "--no-progress", env=env)
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: no network: cannot reach the Hugging Face hub (hub-mirror.test) to stream "
                           "'HuggingFaceFW/fineweb-edu' (") and "403" in line, line
    assert 'source = "local"' in line and "configs/demo.toml" in line
    assert proxy.requests and {r.rsplit(" ", 1)[0] for r in proxy.requests} == {"CONNECT hub-mirror.test:443"}


def test_hub_offline_variable_is_named(tmp_path):
    recipe = write_recipe(tmp_path, name="hub", data={"source": "hf", "dataset": "HuggingFaceFW/fineweb-edu"})
    env = env_with_proxy(f"http://127.0.0.1:{closed_port()}", HF_HUB_OFFLINE="1")
    r = run("pipelines.data", "--config", str(recipe), "--no-progress", env=env)
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "(HF_HUB_OFFLINE=1 is set)" in line, line
