"""`make sft` end to end on CPU: a tiny base pretrained by the real trainer, fine-tuned by the real stage.

Covers the recipe's checkpoint as the base and GPT-2-shaped transformers weights as the base, the manifest
(base and tokenizer fingerprints, held-out loss before and after), exact resume with batch warm-up on,
the rerun rules, bad conversations (counted, or one error naming the file and line), a tokenizer without
the chat tokens, and the hub source on a hub-like directory (offline).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from pipeline_helpers import write_jsonl, write_parquet
from sft_helpers import chat_tokenizer, make_sft_project

from contract import manifest as mf
from contract.recipe import load_recipe
from pipelines import sft
from train.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def texts(corpus_texts):
    return corpus_texts[:300]


@pytest.fixture(scope="module")
def tok(texts):
    return chat_tokenizer(texts)


@pytest.fixture(scope="module")
def project(tmp_path_factory, texts, tok) -> Path:
    """A recipe with a tokenizer, shards and a pretrained base checkpoint (shared; tests fine-tune into their
    own directories with sft.out_dir)."""
    return make_sft_project(tmp_path_factory.mktemp("sft"), texts, tok)


def recipe_for(project: Path, out: Path, **sets: object):
    overrides = {"sft.out_dir": str(out), **{k: json.dumps(v) for k, v in sets.items()}}
    return load_recipe(project, overrides)


def records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_fine_tunes_the_recipe_checkpoint_and_records_what_it_started_from(project, tmp_path, tok, capsys):
    out = tmp_path / "sft"
    manifest = sft.run_stage(recipe_for(project, out))
    base_ckpt = project.parent / "artifacts" / "s" / "pretrain" / "ckpt.pt"
    assert manifest["base"]["sha256"] == mf.sha256_file(base_ckpt) and manifest["base"]["kind"] == "checkpoint"
    assert manifest["tokenizer"]["fingerprint"] == tok.fingerprint == manifest["base"]["tokenizer_fingerprint"]
    before, after = manifest["held_out_loss"]["base"], manifest["held_out_loss"]["fine_tuned"]
    assert after < before - 0.3, (before, after)  # it learned the format: a clear drop in a few steps
    vals = records(out, "val")
    assert [v["step"] for v in vals] == [0, 8, 16] and vals[0]["val_loss"] == before and vals[-1]["val_loss"] == after
    samples = records(out, "sample")
    assert {s["step"] for s in samples} == {0, 8, 16}
    assert all(s["text"].startswith("Q: What does json.dumps do? A:") for s in samples)
    # the files of a finished run, each in the manifest with its sha256
    names = {o["path"] for o in manifest["outputs"]}
    assert {"ckpt.pt", "metrics.jsonl", "loss.png", "summary.json", "tokenizer.ljt.json",
            "hf/tokenizer_config.json"} <= names
    assert "<|assistant_start|>" in json.loads((out / "hf" / "tokenizer_config.json").read_text())["chat_template"]
    state = load_checkpoint(out)
    assert state["step"] == 16 and state["base"]["sha256"] == manifest["base"]["sha256"]
    assert state["tokenizer_fingerprint"] == tok.fingerprint
    data = manifest["data"]
    assert data["read"] == 400 and data["kept"] + sum(data["skipped"].values()) == 400 and data["held_out"] == 40
    out_text = capsys.readouterr().out
    assert "held-out loss on assistant tokens" in out_text and "(base model) ->" in out_text
    # a rerun with the same inputs does nothing
    assert sft.main(["--config", str(project), "--set", f"sft.out_dir={out}"]) == 0
    assert "is up to date" in capsys.readouterr().out and load_checkpoint(out)["step"] == 16


def test_resume_is_exact_with_batch_warmup_on(project, tmp_path, capsys):
    """N steps, stop, resume, N more: the loss sequence and weights of 2N steps straight, bit for bit,
    while the batch grows from 1 to 4 rows per micro-step (so the data stream position depends on it)."""
    warm = {"train.batch_warmup_tokens": 800, "sft.max_steps": 10}
    straight = tmp_path / "straight"
    sft.run_stage(recipe_for(project, straight, **warm))
    split = tmp_path / "split"
    assert sft.run_stage(recipe_for(project, split, **warm), stop_at_step=5) is None
    capsys.readouterr()
    # a plain rerun must not train over the unfinished run
    assert sft.main(["--config", str(project), "--set", f"sft.out_dir={split}", "--set",
                     "train.batch_warmup_tokens=800 sft.max_steps=10"]) == 2
    assert "RESUME=1" in capsys.readouterr().err
    sft.run_stage(recipe_for(project, split, **warm), resume=True)
    losses = [[r["loss"] for r in records(d, "train")] for d in (straight, split)]
    assert losses[0] == losses[1] and len(losses[0]) == 10
    tokens = [r["tokens"] for r in records(straight, "train")]
    steps = [b - a for a, b in zip([0] + tokens, tokens)]
    assert steps[0] == 96 and steps[-1] == 384 and steps == sorted(steps)  # 1 row of 96, growing to 4
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["loader"] == b["loader"] and a["loader"]["consumed"] == sum(steps) // 96
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_bad_conversations_are_counted_and_named(project, tmp_path, tok):
    good = [{"role": "user", "content": "What does json.dumps do?"},
            {"role": "assistant", "content": "Serialize obj to a JSON formatted str."}]
    rows = [{"messages": good}] * 30 + [
        {"messages": [good[1], good[0]]},                                        # wrong role order
        {"messages": [good[0], {"role": "assistant", "content": ""}]},          # empty content
        {"messages": [good[0], {"role": "assistant", "content": 42}]},          # not a string
        {"messages": [good[0], {"role": "assistant", "content": "word " * 200}]},  # longer than the context
        {"messages": good + [{"role": "user", "content": "More?"},
                             {"role": "assistant", "content": "more " * 200}]},  # cut after its first reply
        {"messages": "not a list"},
    ]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    recipe = recipe_for(project, tmp_path / "sft", **{"sft.source": "local", "sft.paths": [str(path)],
                                                      "sft.val_conversations": 5})
    from tokenizer.chat import ChatFormat
    from train.sft_config import sft_section_from_recipe

    _, _, report = sft.prepare_data(recipe, sft_section_from_recipe(recipe), ChatFormat(tok), 97,
                                    tmp_path / "data", log=lambda *a: None)
    assert report["read"] == 36 and report["kept"] == 31 and report["cut_to_context"] == 1
    assert report["skipped"] == {"role_order": 1, "empty_content": 1, "non_string_content": 1, "too_long": 1,
                                 "malformed": 1}
    assert report["examples"]["role_order"][0].startswith(f"{path} line 31: message 0: expected user")
    manifest = mf.read_manifest(tmp_path / "data")
    assert manifest["report"]["skipped"] == report["skipped"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["manifest.json", "train.npz", "val.npz"]


@pytest.mark.parametrize("content, message", [
    ('{"chat": []}\n', r"chats.jsonl line 1: missing column 'messages' \(columns: chat\)"),
    ('{"messages": []}\n{oops\n', r"chats.jsonl line 2: not valid JSON"),
])
def test_unusable_input_stops_with_one_line_naming_file_and_line(project, tmp_path, capsys, content, message):
    (tmp_path / "chats.jsonl").write_text(content)
    rc = sft.main(["--config", str(project), "--set", f"sft.out_dir={tmp_path / 'sft'}", "--set",
                   f'sft.source=local sft.paths=["{tmp_path / "chats.jsonl"}"]'])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "sft-data" / "manifest.json").exists()  # nothing half-made looks complete


def test_a_base_whose_tokenizer_lacks_the_chat_tokens_is_refused(tmp_path, texts, capsys):
    from pretrain_helpers import byte_tokenizer

    path = make_sft_project(tmp_path, texts[:40], byte_tokenizer(), name="plain",
                            model={"block_size": 32}, train={"max_steps": 1, "total_batch_tokens": 128})
    assert sft.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "lacks the chat special tokens" in err and "make tokenizer FORCE=1" in err and "with_chat_tokens" in err


def test_fine_tunes_gpt2_weights_with_the_chat_tokens_in_the_padded_rows(project, tmp_path, gpt2_files):
    """A transformers GPT-2 directory (a small random stand-in with GPT-2's vocabulary and files)."""
    from model import GPT, GPTConfig
    from model.hf import export_hf

    torch.manual_seed(0)
    hf_dir = tmp_path / "gpt2"
    export_hf(GPT(GPTConfig(block_size=64, vocab_size=50257, n_layer=1, n_head=2, n_embd=32)), hf_dir)
    shutil.copy(gpt2_files[0], hf_dir / "vocab.json")  # encoder.json is transformers' vocab.json
    shutil.copy(gpt2_files[1], hf_dir / "merges.txt")
    base = sft.transformers_base(hf_dir)
    wte = base.weights["transformer.wte.weight"]
    assert base.model_config["vocab_size"] == 50263 and wte.shape[0] == 50304  # no resize: the padded rows
    assert torch.allclose(wte[50257:50263], wte[:50257].mean(0).expand(6, -1))  # new rows start as the mean
    assert base.tokenizer.special_tokens["<|assistant_end|>"] == 50262
    chats = [{"messages": [{"role": "user", "content": f"What is {k} + {k}?"},
                           {"role": "assistant", "content": f"It is {2 * k}."}]} for k in range(40)]
    path = write_jsonl(tmp_path / "chats.jsonl", chats)
    out = tmp_path / "sft"
    manifest = sft.run_stage(recipe_for(project, out, **{
        "sft.source": "local", "sft.paths": [str(path)], "sft.val_conversations": 5, "sft.max_steps": 3,
        "sft.micro_batch_size": 2, "sft.total_batch_tokens": 128, "sft.eval_every": 3}), init=str(hf_dir))
    assert manifest["base"]["kind"] == "transformers" and manifest["held_out_loss"]["fine_tuned"] is not None
    state = load_checkpoint(out)
    assert state["model_config"]["vocab_size"] == 50263 and state["model"]["transformer.wte.weight"].shape[0] == 50304
    assert state["tokenizer_fingerprint"] == base.tokenizer.fingerprint


def test_the_hub_source_streams_a_hub_like_directory(tmp_path):
    from pipelines.sources.conversations import iter_records
    from pipelines.sources.records import SourceError
    from train.sft_config import SftSection

    repo = tmp_path / "smol-chat"
    (repo / "data").mkdir(parents=True)
    rows = [{"messages": [{"role": "user", "content": f"q{k}"}, {"role": "assistant", "content": f"a{k}"}],
             "source": "x"} for k in range(5)]
    write_parquet(repo / "data" / "train-00000-of-00001.parquet", rows)
    got = list(iter_records(SftSection(source="hf", dataset=str(repo))))
    assert [r.messages for r in got] == [r["messages"] for r in rows]
    assert [r.id for r in got] == [f"smol-chat:{k}" for k in range(5)] and got[2].where == f"{repo} row 2"
    with pytest.raises(SourceError, match="missing column 'conversation'"):
        list(iter_records(SftSection(source="hf", dataset=str(repo), messages_field="conversation")))
