"""Progress the way tqdm users expect it: TQDM_DISABLE=1 silences every bar, a log file (not a TTY) gets
plain progress lines instead of carriage-return frames, a terminal gets the bar, and `make PROGRESS=0`
turns progress off for every data stage. Real stage commands, real pipes and a real pseudo-terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys

import pytest
from stage_helpers import REPO, recipe_in

from tokenizer.progress import Progress, progress_mode

STAGES = ("pipelines.data", "pipelines.learn_tokenizer", "pipelines.shards")
VENV = REPO / ".venv"
# the real Makefile, never `make setup`; PY is a stand-in that prints the arguments each stage would get
MAKE = ["make", "--no-print-directory", f"VENV={VENV}", "-o", f"{VENV}/.installed",
        f"PY={sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"]


def make_argv(*args: str) -> dict[str, list[str]]:
    """{module: the arguments `make` would run it with}."""
    r = subprocess.run([*MAKE, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    found = {}
    for line in r.stdout.splitlines():
        if line.startswith("["):
            argv = json.loads(line)
            found[argv[1]] = argv[2:]
    return found


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "LLM_JOURNEY_"))}
    return {**base, **extra}


def run_piped(module: str, recipe, **extra_env: str) -> subprocess.CompletedProcess:
    """The stage with stdout and stderr going to pipes, as in `make shards > log 2>&1`."""
    return subprocess.run([sys.executable, "-m", module, "--config", str(recipe), "--force"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env(**extra_env))


def run_on_terminal(module: str, recipe, **extra_env: str) -> str:
    """The stage with stderr on a pseudo-terminal (what a user at a shell sees); returns what it showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", module, "--config", str(recipe), "--force"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=slave, env=env(**extra_env))
    os.close(slave)
    shown = b""
    while True:  # read while it runs: a full pty buffer would block the stage
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the stage closed its side
                chunk = b""
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=120) == 0, shown
    return shown.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The three data stages run once each with their output in a log, a progress line due at every update."""
    root = tmp_path_factory.mktemp("progress")
    recipe = recipe_in(root)
    runs = {m: run_piped(m, recipe, LLM_JOURNEY_PROGRESS_EVERY="0") for m in STAGES}
    for m, r in runs.items():
        assert r.returncode == 0, (m, r.stderr)
    return recipe, runs


def test_a_log_gets_plain_progress_lines_not_frames(logged):
    _, runs = logged
    expected = {"pipelines.data": "data ", "pipelines.learn_tokenizer": "BPE merges: ",
                "pipelines.shards": "shards train: "}
    for module, r in runs.items():
        assert "\r" not in r.stderr, f"{module} wrote carriage-return frames into a log: {r.stderr[:300]!r}"
        lines = [line for line in r.stderr.splitlines() if line.startswith(expected[module])]
        assert lines, f"{module}: no progress line in {r.stderr!r}"
    shards_lines = [line for line in runs["pipelines.shards"].stderr.splitlines() if line.startswith("shards train")]
    assert all(" doc (" in line and "doc/s" in line and "ETA" in line for line in shards_lines), shards_lines


def test_progress_lines_are_spaced_out_by_default(logged):
    """Without LLM_JOURNEY_PROGRESS_EVERY, a stage shorter than 30 s prints no progress line at all."""
    recipe, _ = logged
    r = run_piped("pipelines.shards", recipe)
    assert r.returncode == 0 and "\r" not in r.stderr and "shards train:" not in r.stderr, r.stderr


def test_tqdm_disable_silences_the_bar_on_a_terminal(logged):
    recipe, _ = logged
    assert "\r" in run_on_terminal("pipelines.shards", recipe)           # the bar a user sees
    shown = run_on_terminal("pipelines.shards", recipe, TQDM_DISABLE="1")
    assert "\r" not in shown and "shards train" not in shown and "shards val" not in shown, shown


def test_tqdm_disable_silences_progress_lines_too(logged):
    recipe, _ = logged
    r = run_piped("pipelines.shards", recipe, TQDM_DISABLE="1", LLM_JOURNEY_PROGRESS_EVERY="0")
    assert r.returncode == 0 and "shards train:" not in r.stderr and "\r" not in r.stderr, r.stderr
    assert "shards:" in r.stdout   # the stage's own result line stays


def test_make_progress_0_reaches_every_data_stage():
    quiet, default = make_argv("shards", "PROGRESS=0"), make_argv("shards")
    for module in STAGES:
        assert "--no-progress" in quiet[module] and "--no-progress" not in default[module], module


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_mode_follows_the_stream_and_the_switches(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_mode(True, _Terminal()) == "bar"
    assert progress_mode(True, io.StringIO()) == "lines"
    assert progress_mode(False, _Terminal()) == "off"
    for value, mode in (("1", "off"), ("true", "off"), ("0", "bar"), ("", "bar")):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert progress_mode(True, _Terminal()) == mode, value


def test_a_line_reports_count_rate_and_eta(monkeypatch):
    monkeypatch.setenv("LLM_JOURNEY_PROGRESS_EVERY", "0")
    out = io.StringIO()
    with Progress(200, desc="shards train", unit="doc", stream=out) as p:
        p.update(50)
        p.set_postfix(chars="1.2M")
        p.update(50)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("shards train: 100/200 doc (50%), ")
    assert "doc/s, ETA " in lines[1] and lines[1].endswith(", chars=1.2M")
