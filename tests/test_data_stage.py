"""make data: every source, bad input, resume after an interruption, up-to-date checks. All offline."""

from __future__ import annotations

import itertools
import time

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import file_bytes, write_jsonl, write_parquet, write_recipe

from contract.raw import iter_raw_documents, raw_files
from contract.recipe import load_recipe
from pipelines import data
from pipelines.data import DataStageError
from pipelines.sources import python_docs


def quiet(*_args, **_kwargs):
    pass


def run_data(path, force=False, log=quiet):
    return data.run(load_recipe(path), force=force, progress_bar=False, log=log)


def raw_rows(recipe_path):
    return [r for p in raw_files(load_recipe(recipe_path).stage_dir("raw")) for r in pq.read_table(p).to_pylist()]


def test_python_docs_source_keeps_corpus_ids_and_order(tmp_path):
    recipe = write_recipe(tmp_path, data={"source": "python-docs", "max_documents": 40, "rows_per_file": 15})
    manifest = run_data(recipe)
    expected = list(itertools.islice(python_docs.iter_documents(), 40))
    got = list(iter_raw_documents(load_recipe(recipe).stage_dir("raw")))
    assert got == [(d.id, d.text) for d in expected]
    assert [o["path"] for o in manifest["outputs"]] == ["part-00000.parquet", "part-00001.parquet",
                                                        "part-00002.parquet"]
    assert manifest["stats"]["documents"] == 40
    assert all(len(o["sha256"]) == 64 and o["bytes"] > 0 for o in manifest["outputs"])


def test_iter_raw_documents_from_any_start(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "ROW_GROUP_ROWS", 4)   # files of 15 documents in row groups of 4
    recipe = write_recipe(tmp_path, data={"source": "python-docs", "max_documents": 40, "rows_per_file": 15})
    run_data(recipe)
    raw_dir = load_recipe(recipe).stage_dir("raw")
    assert [pq.ParquetFile(p).num_row_groups for p in raw_files(raw_dir)] == [4, 4, 3]
    everything = list(iter_raw_documents(raw_dir))
    assert len(everything) == 40
    for start in range(0, 42):   # inside row groups, on row group and file boundaries, past the end
        assert list(iter_raw_documents(raw_dir, start=start)) == everything[start:]


def test_local_sources_all_formats(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "first doc", "id": "j0", "url": "u0"},
                                       {"text": "   \n\t ", "id": "j1", "url": "u1"},
                                       {"text": "third doc", "id": "j2", "url": "u2"}])
    write_parquet(tmp_path / "b.parquet", [{"text": f"parquet doc {i}", "id": f"p{i}", "url": f"pu{i}"}
                                           for i in range(5)])
    recipe = write_recipe(tmp_path, data={"source": "local", "metadata_fields": ["url"], "id_field": "id",
                                          "paths": [str(tmp_path / "a.jsonl"), str(tmp_path / "*.parquet")]})
    manifest = run_data(recipe)
    rows = raw_rows(recipe)
    assert [r["id"] for r in rows] == ["j0", "j2"] + [f"p{i}" for i in range(5)]
    assert rows[0] == {"text": "first doc", "id": "j0", "source": "local", "url": "u0"}
    assert manifest["stats"]["skipped_empty"] == 1
    assert manifest["inputs"]["files"][0]["path"].endswith("a.jsonl")

    (tmp_path / "c.txt").write_text("line one\n\nline three\n", encoding="utf-8")
    txt = write_recipe(tmp_path, name="txt", data={"source": "local", "paths": [str(tmp_path / "c.txt")]})
    manifest = run_data(txt)
    assert [(r["id"], r["text"]) for r in raw_rows(txt)] == [("c.txt:0", "line one"), ("c.txt:2", "line three")]
    assert manifest["stats"]["skipped_empty"] == 1


def test_broken_unicode_is_repaired_and_counted(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"good line\nbad \xff\xfe bytes\n")
    (tmp_path / "sur.jsonl").write_bytes(b'{"text": "ok \xc3"}\n{"text": "lone \\ud800 surrogate"}\n')
    recipe = write_recipe(tmp_path, data={"source": "local",
                                          "paths": [str(tmp_path / "bad.txt"), str(tmp_path / "sur.jsonl")]})
    manifest = run_data(recipe)
    texts = [r["text"] for r in raw_rows(recipe)]
    assert texts == ["good line", "bad \ufffd\ufffd bytes", "ok \ufffd", "lone \ufffd surrogate"]
    assert manifest["stats"]["repaired_documents"] == 3
    assert manifest["stats"]["replaced_characters"] == 4


@pytest.mark.parametrize(
    "rows, fields, match",
    [
        ([{"text": "a"}, {"text": 5}], {}, r"x\.jsonl row 1: field 'text' must be a string, got a int"),
        ([{"text": "a"}, {"txt": "b"}], {}, r"x\.jsonl row 1: field 'text' must be a string, got missing"),
        ([{"body": "a"}], {}, r"x\.jsonl: missing column 'text' \(columns: body\)"),
        ([{"text": "a"}], {"id_field": "doc_id"}, r"x\.jsonl: missing column 'doc_id'"),
    ],
)
def test_bad_records_name_file_row_and_field(tmp_path, rows, fields, match):
    write_jsonl(tmp_path / "x.jsonl", rows)
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "x.jsonl")], **fields})
    with pytest.raises(DataStageError, match=match):
        run_data(recipe)
    assert not (load_recipe(recipe).stage_dir("raw") / "manifest.json").exists()


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "broken.parquet")]})
    with pytest.raises(DataStageError, match=r"broken\.parquet: cannot be read"):
        run_data(recipe)
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "nothing.jsonl")]})
    with pytest.raises(DataStageError, match=r"nothing\.jsonl does not exist"):
        run_data(recipe)
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "*.csv")]})
    with pytest.raises(DataStageError, match=r"matches no file"):
        run_data(recipe)


def test_hf_without_network_fails_fast_with_help(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = write_recipe(tmp_path, data={"source": "hf", "dataset": "HuggingFaceFW/fineweb-edu",
                                          "config": "sample-10BT"})
    t0 = time.perf_counter()
    with pytest.raises(DataStageError, match=r"no network(.|\n)*configs/demo\.toml(.|\n)*source = \"local\""):
        run_data(recipe)
    assert time.perf_counter() - t0 < 5


def _hub_dir(tmp_path, n=40):
    """A directory laid out like a hub dataset repo: datasets streams it with the hf code path."""
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    rows = [{"text": f"document number {i} " + "word " * (i % 7), "id": f"<urn:{i:04d}>", "score": i / 10}
            for i in range(n)]
    write_parquet(hub / "train-00000-of-00002.parquet", rows[: n // 2])
    write_parquet(hub / "train-00001-of-00002.parquet", rows[n // 2 :])
    return tmp_path / "hub", rows


def test_hf_streaming_limits_and_metadata(tmp_path):
    hub, rows = _hub_dir(tmp_path)
    recipe = write_recipe(tmp_path, data={"source": "hf", "dataset": str(hub), "id_field": "id",
                                          "metadata_fields": ["score"], "max_documents": 25, "rows_per_file": 10})
    manifest = run_data(recipe)
    got = raw_rows(recipe)
    assert [r["id"] for r in got] == [r["id"] for r in rows[:25]]
    assert got[3]["score"] == rows[3]["score"] and got[3]["source"] == "hf"
    assert len(manifest["outputs"]) == 3

    chars = write_recipe(tmp_path, name="chars", data={"source": "hf", "dataset": str(hub), "max_characters": 100})
    run_data(chars)
    got = raw_rows(chars)
    assert sum(len(r["text"]) for r in got[:-1]) < 100 <= sum(len(r["text"]) for r in got)


class Interrupt(BaseException):
    """Stands in for a crash/kill between two records."""


def test_hf_resume_keeps_finished_files_and_uses_stream_state(tmp_path, monkeypatch):
    hub, rows = _hub_dir(tmp_path, n=60)
    fields = {"source": "hf", "dataset": str(hub), "id_field": "id", "rows_per_file": 8}
    reference = write_recipe(tmp_path, name="ref", data=fields)
    run_data(reference)
    recipe = write_recipe(tmp_path, data=fields)

    real_normalize = data._normalize
    seen = {"n": 0}

    def crash_after_27(rec, cfg, stats):
        seen["n"] += 1
        if seen["n"] > 27:
            raise Interrupt
        return real_normalize(rec, cfg, stats)

    monkeypatch.setattr(data, "_normalize", crash_after_27)
    with pytest.raises(Interrupt):
        run_data(recipe)
    raw_dir = load_recipe(recipe).stage_dir("raw")
    assert not (raw_dir / "manifest.json").exists()
    recorded = data.recorded_files(raw_dir)
    assert [e["output"]["path"] for e in recorded] == ["part-00000.parquet", "part-00001.parquet",
                                                       "part-00002.parquet"]
    assert recorded[-1]["consumed"] == 24 and recorded[-1]["stream_state"] is not None
    finished = {p.name: p.stat().st_mtime_ns for p in raw_dir.glob("part-*.parquet")}

    monkeypatch.setattr(data, "_normalize", real_normalize)
    from pipelines.sources import hf

    states = []
    real_init = hf.HubStream.__init__

    def spy(self, *args, **kwargs):
        states.append(kwargs.get("resume_state"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(hf.HubStream, "__init__", spy)
    logs = []
    run_data(recipe, log=logs.append)
    assert states and states[0] is not None               # resumed from the stream's state_dict
    assert "resuming after 3 finished file(s)" in logs[0]
    for name, mtime in finished.items():                   # finished files were not fetched again
        assert (raw_dir / name).stat().st_mtime_ns == mtime
    assert [r["id"] for r in raw_rows(recipe)] == [r["id"] for r in rows]
    assert file_bytes(raw_dir, ("*.parquet",)) == file_bytes(load_recipe(reference).stage_dir("raw"), ("*.parquet",))


def test_up_to_date_force_and_config_change(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"doc {i}"} for i in range(5)])
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "a.jsonl")]})
    run_data(recipe)
    logs = []
    run_data(recipe, log=logs.append)
    assert "up to date" in logs[0]
    logs.clear()
    run_data(recipe, force=True, log=logs.append)
    assert "up to date" not in logs[0]
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"doc {i}"} for i in range(7)])  # input changed: rerun
    manifest = run_data(recipe)
    assert manifest["stats"]["documents"] == 7
    # a changed recipe key reruns too, and stale part files of the old run disappear
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": [str(tmp_path / "a.jsonl")], "rows_per_file": 2})
    manifest = run_data(recipe)
    assert len(manifest["outputs"]) == 4
    assert len(list(load_recipe(recipe).stage_dir("raw").glob("part-*"))) == 4


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    recipe = write_recipe(tmp_path, data={"source": "local", "paths": []})
    assert data.main(["--config", str(recipe), "--no-progress"]) == 2
    assert "needs [data] paths" in capsys.readouterr().err
    assert data.main(["--config", str(recipe), "--set", "data.sauce=local"]) == 2
    assert "unknown key 'sauce'" in capsys.readouterr().err
