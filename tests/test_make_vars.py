"""Values typed after `make` reach the commands exactly as typed: quotes, spaces, `$(...)`, `'`.
Checked on what the shell really hands the command (real make, real shell), and end to end through
a real stage. Also `make DEBUG=1`, which makes expected failures print their traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from pipeline_helpers import write_recipe
from stage_helpers import REPO

VENV = REPO / ".venv"
# run the real Makefile, but never `make setup`: the existing .venv counts as installed
MAKE = ["make", "--no-print-directory", f"VENV={VENV}", "-o", f"{VENV}/.installed"]
# A stand-in for the Python that make runs: prints the arguments the shell gave it, as JSON.
ARGV_PY = f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"

SET = 'data.paths=["/data/my file.jsonl", "it\'s $(HOME) & `x`.jsonl"] shards.workers=1'
PROMPT = """It's $(date) and "quoted" \\n; echo no"""


def make(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*MAKE, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert not check or result.returncode == 0, result.stderr
    return result


def argv_of(stdout: str, module: str) -> list[str]:
    """The arguments the command for `module` received, from ARGV_PY's output."""
    for line in stdout.splitlines():
        if line.startswith("["):
            argv = json.loads(line)
            if argv[:2] == ["-m", module]:
                return argv[2:]
    raise AssertionError(f"no command for {module} in {stdout!r}")


def test_set_reaches_every_stage_as_typed():
    out = make("shards", f"SET={SET}", f"PY={ARGV_PY}").stdout
    for module in ("pipelines.data", "pipelines.learn_tokenizer", "pipelines.shards"):
        argv = argv_of(out, module)
        assert argv[argv.index("--set") + 1] == SET


def test_prompt_and_doc_ids_reach_the_command_as_typed():
    argv = argv_of(make("sample", f"PROMPT={PROMPT}", "TOKENS=5", f"PY={ARGV_PY}").stdout, "pipelines.sample")
    assert argv[argv.index("--prompt") + 1] == PROMPT and argv[argv.index("--tokens") + 1] == "5"
    out = make("inspect", "-o", "shards", "DOC=<urn:uuid:1> doc:a$(b)", f"PY={ARGV_PY}").stdout
    argv = argv_of(out, "pipelines.inspect")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--doc"] == ["<urn:uuid:1>", "doc:a$(b)"]


def test_a_list_value_with_spaces_and_quotes_end_to_end(tmp_path):
    """A real `make data`: the recipe the stage used (recorded in its manifest) holds the exact list."""
    recipe = write_recipe(tmp_path, name="vars", data={"source": "python-docs"})
    paths = ["/data/my file.jsonl", "it's $(HOME).jsonl"]
    value = 'data.max_documents=20 data.rows_per_file=10 data.paths=["/data/my file.jsonl", "it\'s $(HOME).jsonl"]'
    make("data", f"CONFIG={recipe}", f"SET={value}")
    manifest = json.loads((tmp_path / "artifacts" / "vars" / "raw" / "manifest.json").read_text())
    assert manifest["config"]["paths"] == paths and manifest["config"]["max_documents"] == 20


def test_debug_shows_the_traceback_of_an_expected_failure(tmp_path):
    recipe = write_recipe(tmp_path, name="dbg", shards={"shard_tokens": "many"})
    plain = make("data", f"CONFIG={recipe}", check=False)
    assert plain.returncode != 0 and "Traceback" not in plain.stderr
    assert "error: " in plain.stderr and "'shard_tokens' must be int" in plain.stderr
    debug = make("data", f"CONFIG={recipe}", "DEBUG=1", check=False)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "RecipeError" in debug.stderr
