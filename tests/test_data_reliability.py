"""make data on inputs that go wrong: bad JSON, empty files, duplicate ids, damaged parts on resume.

The rules these tests hold the stage to (README, "Datasets"):
- a bad line or value stops the stage with ONE `error:` line naming the file and line/row/field,
  exit status 2, and no manifest; it never hangs (the CLI runs under a timeout here);
- an input file without records (0 bytes, a zero-row parquet, a jsonl of blank lines) contributes no
  documents: a warning and `empty_files` in the manifest; when no input holds a document, an error;
- a document whose id was already written is skipped (the first one is kept), warned about and
  counted (`skipped_duplicates`); a file listed twice is read once (`repeated_files`);
- a resume re-checks every finished part against the size and sha256 recorded with it, and redoes
  a damaged one instead of trusting it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import file_bytes, write_jsonl, write_parquet, write_recipe

from contract.raw import raw_files
from contract.recipe import load_recipe
from pipelines import data
from pipelines.data import DataStageError
from pipelines.sources import python_docs

REPO = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_S = 60   # a healthy run takes ~2 s (importing `datasets`); a spinning one is killed and fails


def quiet(*_args, **_kwargs):
    pass


def run_data(path: Path, force: bool = False, log=quiet) -> dict:
    return data.run(load_recipe(path), force=force, progress_bar=False, log=log)


def raw_rows(recipe_path: Path) -> list[dict]:
    return [r for p in raw_files(load_recipe(recipe_path).stage_dir("raw")) for r in pq.read_table(p).to_pylist()]


def raw_dir_of(recipe_path: Path) -> Path:
    return load_recipe(recipe_path).stage_dir("raw")


# ------------------------------------------------------------------------------ one error line, rc 2
def _drop_file_permission_override() -> None:
    """In the child, before exec: give up root's CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (bounding set), so
    a mode-000 file really is unreadable even when the tests run as root (containers, CI)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):   # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli(recipe: Path, unprivileged: bool = False) -> subprocess.CompletedProcess:
    """`python -m pipelines.data` in a fresh interpreter, killed (and failing the test) if it hangs."""
    drop = _drop_file_permission_override if unprivileged and os.geteuid() == 0 else None
    return subprocess.run([sys.executable, "-m", "pipelines.data", "--config", str(recipe), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, preexec_fn=drop)


def _invalid_json(tmp_path: Path) -> Path:
    """300 good lines first: the stage has started writing a part (a row group is 256 documents)."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' * 300 + '{"text": oops}\n', encoding="utf-8")
    return path


def _non_object_line(tmp_path: Path) -> Path:
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "fine"}\n\n[1, 2]\n', encoding="utf-8")
    return path


def _unreadable(tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "secret.jsonl", [{"text": "you may not read me"}])
    path.chmod(0)
    return path


@pytest.mark.parametrize("make_input, expected", [
    (_invalid_json, r"error: \S*bad\.jsonl line 301: not valid JSON \(Expecting value\)"),
    (_non_object_line, r"error: \S*list\.jsonl line 3: expected a JSON object, got list"),
    (_unreadable, r"error: \S*secret\.jsonl: cannot be read \(Permission denied\)"),
], ids=["invalid-json-line", "non-object-line", "permission-denied"])
def test_cli_bad_input_is_one_error_line_and_rc_2(tmp_path, make_input, expected):
    path = make_input(tmp_path)
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(path)]})
    out = run_cli(recipe, unprivileged=True)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1, f"expected one error line, got:\n{out.stderr}"
    assert re.fullmatch(expected, lines[0]), lines[0]
    raw_dir = raw_dir_of(recipe)
    assert not (raw_dir / "manifest.json").exists()
    assert not list(raw_dir.glob("*.tmp"))   # the part being written was discarded, not left half done


@pytest.mark.parametrize("rows, match", [
    ([{"text": ["a", "list"], "id": "1"}], r"x\.parquet row 0: field 'text' must be a string, got a list"),
    ([{"body": "a", "id": "1"}], r"x\.parquet: missing column 'text' \(columns: body, id\)"),
    ([{"text": "a", "id": None}], r"x\.parquet row 0: id field 'id' must be a string or number, got None"),
])
def test_bad_parquet_values_name_file_row_and_field(tmp_path, rows, match):
    write_parquet(tmp_path / "x.parquet", rows)
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "x.parquet")], "id_field": "id"})
    with pytest.raises(DataStageError, match=match):
        run_data(recipe)
    assert not (raw_dir_of(recipe) / "manifest.json").exists()


class StillRunning(BaseException):
    """Raised by the alarm: a BaseException, so no `except Exception` in the code under test can swallow it."""


@contextmanager
def fails_after(seconds: float):
    """Turn a hang (a retry loop that never ends) into a test failure."""
    def expire(_signum, _frame):
        raise StillRunning(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_bad_line_after_repairs_is_reported_once_not_retried(tmp_path):
    """Arrow rejects the lone surrogate, Python's reader takes over (once) and then meets the bad line."""
    (tmp_path / "mixed.jsonl").write_bytes(b'{"text": "lone \\ud800"}\n{"text": "ok"}\n{"text": nope}\n')
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "mixed.jsonl")]})
    with fails_after(30), pytest.raises(DataStageError, match=r"mixed\.jsonl line 3: not valid JSON"):
        run_data(recipe)


# ------------------------------------------------------------------------------------- empty inputs
def _empty_inputs(tmp_path: Path) -> list[Path]:
    """One of each kind of file without records."""
    paths = [tmp_path / name for name in ("a.jsonl", "b.json", "c.txt", "d.parquet", "e.jsonl", "f.json")]
    for p in paths[:3]:
        p.write_bytes(b"")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), paths[3])   # a footer, zero rows
    paths[4].write_text("\n  \n\n", encoding="utf-8")
    paths[5].write_text("[]\n", encoding="utf-8")
    return paths


def test_empty_files_contribute_nothing_and_are_counted(tmp_path):
    empty = _empty_inputs(tmp_path)
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "one"}, {"text": "two"}])
    paths = [str(empty[0]), str(good), *map(str, empty[1:])]
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": paths})
    logs: list[str] = []
    manifest = run_data(recipe, log=logs.append)
    assert [r["text"] for r in raw_rows(recipe)] == ["one", "two"]
    assert manifest["stats"]["empty_files"] == 6 and manifest["stats"]["documents"] == 2
    warnings = [line for line in logs if "warning" in line]
    assert len(warnings) == data.WARN_LIMIT + 1 == 6     # the first five by name, then how many in all
    assert all(str(path) in line and "holds no records" in line for path, line in zip(empty, warnings[:-1]))
    assert "6 input file(s) held no records in all" in warnings[-1]


def test_only_empty_files_is_an_error(tmp_path):
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(p) for p in _empty_inputs(tmp_path)]})
    with pytest.raises(DataStageError, match=r"no non-empty documents.*'empty_files': 6"):
        run_data(recipe, log=quiet)
    assert not (raw_dir_of(recipe) / "manifest.json").exists()


# ------------------------------------------------------------------------------------ duplicate ids
def test_duplicate_ids_keep_the_first_and_are_counted(tmp_path):
    write_parquet(tmp_path / "p.parquet", [{"text": f"text {i}", "id": doc_id} for i, doc_id in
                                           enumerate(["a", "b", "a", "c", "b", "a"])])
    write_jsonl(tmp_path / "j.jsonl", [{"text": "again", "id": "c"}, {"text": "new", "id": "d"}])
    # j.jsonl is listed twice (once by a glob, once by a different spelling of its path): read once
    paths = [str(tmp_path / "p.parquet"), str(tmp_path / "*.jsonl"), str(tmp_path / "." / "j.jsonl")]
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": paths, "id_field": "id"})
    logs: list[str] = []
    manifest = run_data(recipe, log=logs.append)
    assert [(r["id"], r["text"]) for r in raw_rows(recipe)] == [("a", "text 0"), ("b", "text 1"), ("c", "text 3"),
                                                                ("d", "new")]
    stats = manifest["stats"]
    assert (stats["skipped_duplicates"], stats["repeated_files"], stats["documents"]) == (4, 1, 4)
    assert [p["path"] for p in manifest["inputs"]["files"]] == [str(tmp_path / "p.parquet"), str(tmp_path / "j.jsonl")]
    assert any("j.jsonl is listed more than once" in line for line in logs)
    assert any("p.parquet row 2: duplicate id 'a'" in line for line in logs)


def test_made_up_ids_of_files_with_the_same_name_do_not_collide(tmp_path):
    for sub in ("2023", "2024"):
        (tmp_path / sub).mkdir()
        write_jsonl(tmp_path / sub / "part.jsonl", [{"text": f"from {sub}"}])
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "*" / "part.jsonl")]})
    manifest = run_data(recipe)
    rows = raw_rows(recipe)
    assert [r["text"] for r in rows] == ["from 2023", "from 2024"] and manifest["stats"]["skipped_duplicates"] == 0
    assert rows[0]["id"] != rows[1]["id"] and all(r["id"].endswith("part.jsonl:0") for r in rows)


def test_hub_stream_duplicates_are_skipped_too(tmp_path):
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    write_parquet(hub / "train-00000-of-00002.parquet", [{"text": f"doc {i}", "id": f"<urn:{i}>"} for i in range(6)])
    write_parquet(hub / "train-00001-of-00002.parquet", [{"text": f"copy {i}", "id": f"<urn:{i}>"} for i in (4, 7)])
    recipe = write_recipe(tmp_path, data={"source": "hf", "dataset": str(tmp_path / "hub"), "id_field": "id"})
    manifest = run_data(recipe)
    assert [r["id"] for r in raw_rows(recipe)] == [f"<urn:{i}>" for i in (0, 1, 2, 3, 4, 5, 7)]
    assert manifest["stats"]["skipped_duplicates"] == 1


def test_python_docs_ids_are_unique_even_for_redefined_names(tmp_path):
    doc = "A docstring long enough to be kept as a document of the embedded corpus, about eighty characters."
    (tmp_path / "mod.py").write_text(f'def f():\n    """{doc}"""\n\n\ndef f():\n    """{doc} Again."""\n')
    ids = [d.id for d in python_docs._docstring_documents(tmp_path)]
    assert ids == ["doc:mod.py:f", "doc:mod.py:f#2"]


def test_seen_ids_across_merges():
    seen = data.SeenIds(buffer=4)      # tiny buffer: most lookups go to the merged, sorted digests
    ids = [f"id{i}" for i in range(50)]
    assert all(seen.add(i) for i in ids)
    assert not any(seen.add(i) for i in reversed(ids))
    assert len(seen) == 50


class Interrupt(BaseException):
    """Stands in for a crash between two records."""


def _crash_after(monkeypatch, n: int) -> None:
    real = data._normalize
    seen = {"n": 0}

    def crashing(rec, cfg, stats):
        seen["n"] += 1
        if seen["n"] > n:
            raise Interrupt
        return real(rec, cfg, stats)

    monkeypatch.setattr(data, "_normalize", crashing)


def test_duplicates_of_finished_files_are_still_found_after_a_resume(tmp_path, monkeypatch):
    rows = [{"text": f"doc {i}", "id": f"d{i % 14}"} for i in range(20)]   # rows 14..19 repeat ids of file 0
    write_parquet(tmp_path / "in.parquet", rows)
    fields = {"source": "local", "paths": [str(tmp_path / "in.parquet")], "id_field": "id", "rows_per_file": 4}
    (tmp_path / "ref").mkdir()
    reference = run_data(write_recipe(tmp_path / "ref", data=fields))
    recipe = write_recipe(tmp_path, data=fields)
    _crash_after(monkeypatch, 10)
    with pytest.raises(Interrupt):
        run_data(recipe)
    monkeypatch.undo()
    manifest = run_data(recipe)
    assert manifest["stats"]["skipped_duplicates"] == reference["stats"]["skipped_duplicates"] == 6
    assert [r["id"] for r in raw_rows(recipe)] == [f"d{i}" for i in range(14)]
    assert file_bytes(raw_dir_of(recipe), ("*.parquet",)) == file_bytes(raw_dir_of(tmp_path / "ref" / "tiny.toml"),
                                                                        ("*.parquet",))


# ------------------------------------------------------------------------------ resume verification
def _flip_a_byte(path: Path, offset: int = 100) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing"])
def test_resume_redoes_a_damaged_part_instead_of_trusting_it(tmp_path, monkeypatch, damage):
    write_parquet(tmp_path / "in.parquet", [{"text": f"document {i} " * (1 + i % 5), "id": f"d{i}"} for i in range(40)])
    fields = {"source": "local", "paths": [str(tmp_path / "in.parquet")], "id_field": "id", "rows_per_file": 8}
    (tmp_path / "ref").mkdir()
    run_data(write_recipe(tmp_path / "ref", data=fields))
    recipe = write_recipe(tmp_path, data=fields)
    raw_dir = raw_dir_of(recipe)
    _crash_after(monkeypatch, 30)          # parts 0..2 finished (24 documents), part 3 half written
    with pytest.raises(Interrupt):
        run_data(recipe)
    monkeypatch.undo()
    journal = data.recorded_files(raw_dir)
    assert [e["output"]["path"] for e in journal] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for entry in journal:                  # each finished part is recorded with its size and checksum
        assert entry["output"] == data.mf.output_entry(raw_dir / entry["output"]["path"], raw_dir)

    part1 = raw_dir / "part-00001.parquet"
    if damage == "flipped byte":           # same size: only the checksum can tell
        _flip_a_byte(part1)
    elif damage == "truncated":
        part1.write_bytes(part1.read_bytes()[:-10])
    else:
        part1.unlink()
    part0 = (raw_dir / "part-00000.parquet").stat().st_ino
    logs: list[str] = []
    run_data(recipe, log=logs.append)
    assert any("part-00001.parquet is damaged" in line for line in logs), logs
    assert "resuming after 1 finished file(s)" in " ".join(logs)
    assert (raw_dir / "part-00000.parquet").stat().st_ino == part0     # the intact part was kept as it was
    assert file_bytes(raw_dir, ("*.parquet", "manifest.json")) == file_bytes(
        raw_dir_of(tmp_path / "ref" / "tiny.toml"), ("*.parquet", "manifest.json"))


@pytest.mark.parametrize("tail", ['{"consumed": 24, "output": {"path": "part-0000',      # cut off while appending
                                  '{"consumed": 24, "output": "part-00002.parquet"}\n'])  # parses, wrong shape
def test_a_torn_or_garbled_progress_line_ends_the_record(tmp_path, monkeypatch, tail):
    write_parquet(tmp_path / "in.parquet", [{"text": f"document {i}", "id": f"d{i}"} for i in range(40)])
    fields = {"source": "local", "paths": [str(tmp_path / "in.parquet")], "id_field": "id", "rows_per_file": 8}
    (tmp_path / "ref").mkdir()
    run_data(write_recipe(tmp_path / "ref", data=fields))
    recipe = write_recipe(tmp_path, data=fields)
    raw_dir = raw_dir_of(recipe)
    _crash_after(monkeypatch, 20)          # parts 0 and 1 finished
    with pytest.raises(Interrupt):
        run_data(recipe)
    monkeypatch.undo()
    with open(raw_dir / data.PROGRESS, "a", encoding="utf-8") as f:
        f.write(tail)
    logs: list[str] = []
    run_data(recipe, log=logs.append)
    assert "resuming after 2 finished file(s), 16 records read" in logs[0]
    assert file_bytes(raw_dir, ("*.parquet", "manifest.json")) == file_bytes(
        raw_dir_of(tmp_path / "ref" / "tiny.toml"), ("*.parquet", "manifest.json"))


def test_progress_journal_is_appended_not_rewritten(tmp_path, monkeypatch):
    """O(1) bookkeeping per finished file: the record only grows by one line; earlier bytes never change."""
    write_parquet(tmp_path / "in.parquet", [{"text": f"document {i}", "id": f"d{i}"} for i in range(30)])
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "in.parquet")],
                                          "rows_per_file": 5})
    raw_dir = raw_dir_of(recipe)
    snapshots: list[bytes] = []
    real_close = data._PartWriter.close

    def close_and_snapshot(self):
        progress = raw_dir / data.PROGRESS
        snapshots.append(progress.read_bytes() if progress.exists() else b"")
        real_close(self)

    monkeypatch.setattr(data._PartWriter, "close", close_and_snapshot)
    run_data(recipe)
    assert len(snapshots) == 6
    for before, after in zip(snapshots[1:], snapshots[2:]):
        assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1
