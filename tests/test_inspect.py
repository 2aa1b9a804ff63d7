"""make inspect: summary table, checksums, decoded documents, top tokens, histogram, --json; and the
whole chain through the stage CLIs (what `make shards` runs), including up-to-date skips."""

from __future__ import annotations

import json
import shutil

import pytest
from pipeline_helpers import write_recipe

from contract.recipe import load_recipe
from pipelines import data, learn_tokenizer, shards
from pipelines import inspect as inspect_cli


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A tiny recipe run through the three stage CLIs, as `make shards` does."""
    root = tmp_path_factory.mktemp("inspect")
    recipe = write_recipe(root, name="mini",
                          data={"source": "python-docs", "max_documents": 300, "rows_per_file": 100},
                          tokenizer={"vocab_size": 400, "max_characters": 100_000, "heldout_documents": 10},
                          shards={"shard_tokens": 20_000, "val_documents": 10, "workers": 1})
    for stage in (data, learn_tokenizer, shards):
        assert stage.main(["--config", str(recipe), "--no-progress"]) == 0
    return recipe


def test_stages_skip_when_up_to_date_and_force_redoes_one(chain, capsys):
    capsys.readouterr()
    for stage in (data, learn_tokenizer, shards):
        assert stage.main(["--config", str(chain), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("is up to date") == 3
    assert learn_tokenizer.main(["--config", str(chain), "--no-progress", "--force"]) == 0
    assert "up to date" not in capsys.readouterr().out
    # retraining gives the same tokenizer (deterministic), so the shards stay valid
    assert shards.main(["--config", str(chain), "--no-progress"]) == 0
    assert "up to date" in capsys.readouterr().out
    # a different vocabulary invalidates the shards: their inputs changed
    assert learn_tokenizer.main(["--config", str(chain), "--no-progress", "--set", "tokenizer.vocab_size=390"]) == 0
    assert shards.main(["--config", str(chain), "--no-progress", "--set", "tokenizer.vocab_size=390"]) == 0
    assert "up to date" not in capsys.readouterr().out
    assert learn_tokenizer.main(["--config", str(chain), "--no-progress"]) == 0
    assert shards.main(["--config", str(chain), "--no-progress"]) == 0


def test_shards_stage_needs_the_tokenizer(tmp_path, capsys):
    recipe = write_recipe(tmp_path, name="none")
    assert shards.main(["--config", str(recipe)]) == 2
    assert "run `make tokenizer` first" in capsys.readouterr().err


def test_tokenizer_report_compares_with_gpt2(chain, gpt2_files, tmp_path):
    encoder_json, vocab_bpe = gpt2_files
    target = tmp_path / "gpt2cmp"
    shutil.copytree(load_recipe(chain).artifacts_dir, target / "mini")
    recipe = load_recipe(chain, {"artifacts_root": str(target), "tokenizer.gpt2_encoder_json": str(encoder_json),
                                 "tokenizer.gpt2_vocab_bpe": str(vocab_bpe)})
    out = recipe.stage_dir("tokenizer")
    before = (out / "tokenizer.ljt.json").stat().st_mtime_ns
    logs = []
    learn_tokenizer.run(recipe, progress_bar=False, log=logs.append)
    assert logs[0] == "tokenizer: merges up to date, refreshing report.json"   # no retraining for a report
    assert (out / "tokenizer.ljt.json").stat().st_mtime_ns == before
    report = json.loads((out / "report.json").read_text())
    assert report["heldout_documents"] == 10
    assert report["gpt2"]["n_vocab"] == 50257 and report["gpt2"]["bytes"] == report["ours"]["bytes"]
    assert report["gpt2"]["bytes_per_token"] > report["ours"]["bytes_per_token"] > 1.5   # 50k vs 400 tokens
    for name in ("tokenizer.ljt.json", "tokenizer.tiktoken", "hf/tokenizer.json", "hf/tokenizer_config.json"):
        assert (out / name).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert {o["path"] for o in manifest["outputs"]} >= {"tokenizer.ljt.json", "hf/tokenizer.json", "report.json"}
    logs.clear()
    learn_tokenizer.run(recipe, progress_bar=False, log=logs.append)
    assert "is up to date" in logs[0]
    bad = load_recipe(chain, {"artifacts_root": str(target), "tokenizer.gpt2_encoder_json": "/nonexistent.json"})
    with pytest.raises(learn_tokenizer.TokenizerStageError, match=r"gpt2_encoder_json: /nonexistent\.json does not"):
        learn_tokenizer.run(bad, progress_bar=False, log=logs.append)


def test_summary_table_checksums_documents_histogram(chain, capsys, tmp_path):
    plot = tmp_path / "lengths.png"
    assert inspect_cli.main(["--config", str(chain), "--plot", str(plot), "--docs", "1"]) == 0
    out = capsys.readouterr().out
    assert "split" in out and "bytes/token" in out and "train" in out and "val" in out
    assert "all sha256 match the manifest" in out
    assert "most frequent tokens:" in out and "--- document " in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_and_single_document(chain, capsys):
    shard_dir = load_recipe(chain).stage_dir("shards")
    assert inspect_cli.main([str(shard_dir), "--json", "--doc", "topic:assert", "--top", "5"]) == 0
    facts = json.loads(capsys.readouterr().out)
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    for split in ("train", "val"):
        assert facts["splits"][split]["tokens"] == manifest["splits"][split]["tokens"]
        assert facts["splits"][split]["documents"] == manifest["splits"][split]["documents"]
    assert facts["checksums"]["ok"] and facts["checksums"]["files"] == len(manifest["outputs"])
    assert len(facts["top_tokens"]) == 5 and facts["top_tokens"][0]["count"] >= facts["top_tokens"][1]["count"]
    (doc,) = facts["documents"]
    assert doc["id"] == "topic:assert" and doc["text"].startswith("The \"assert\" statement")
    assert sum(t["count"] for t in facts["top_tokens"]) <= sum(s["tokens"] for s in facts["splits"].values())


def test_single_shard_and_errors(chain, capsys, tmp_path):
    shard_dir = load_recipe(chain).stage_dir("shards")
    assert inspect_cli.main([str(shard_dir / "train_000001.npy"), "--json", "--docs", "0"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert list(facts["splits"]) == ["train"] and facts["splits"]["train"]["shards"] == 1
    assert facts["splits"]["train"]["tokens"] == 20_000

    assert inspect_cli.main([str(shard_dir), "--doc", "no-such-doc"]) == 2
    assert "not found" in capsys.readouterr().err
    assert inspect_cli.main([str(tmp_path)]) == 2
    assert "manifest.json not found" in capsys.readouterr().err

    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    victim = copy / "train_000000.npy"
    raw = bytearray(victim.read_bytes())
    raw[200] ^= 1
    victim.write_bytes(bytes(raw))
    assert inspect_cli.main([str(copy), "--docs", "0"]) == 1
    assert "MISMATCH in train_000000.npy" in capsys.readouterr().out


def test_make_runs_the_chain_and_force_redoes_only_the_named_stage():
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(["make", "-n", "shards", "FORCE=1", "SET=shards.workers=1 shards.format=arrow"],
                         cwd=repo, capture_output=True, text=True, check=True).stdout
    stages = [line for line in out.splitlines() if " -m pipelines." in line]
    assert [s.split(" -m ")[1].split()[0] for s in stages] == ["pipelines.data", "pipelines.learn_tokenizer",
                                                               "pipelines.shards"]
    assert "--force" in stages[2] and "--force" not in stages[0] + stages[1]
    assert all("--set 'shards.workers=1 shards.format=arrow'" in s for s in stages)   # one word, as typed
    out = subprocess.run(["make", "-n", "inspect", "DOC=topic:assert", "CONFIG=configs/fineweb-edu-10B.toml"],
                         cwd=repo, capture_output=True, text=True, check=True).stdout
    assert "pipelines.inspect --config 'configs/fineweb-edu-10B.toml'" in out and "--doc 'topic:assert'" in out
