"""The training loop on CPU: step arithmetic, optimizer setup, learning, logging, wandb, bad input."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from pretrain_helpers import make_project, write_recipe, write_shards

from contract.recipe import load_recipe
from contract.shard_format import ShardFormatError
from train.config import TrainSection, batch_plan, pretrain_config_from_recipe
from train.loader import ContextTooLongError
from train.optim import lr_at, make_optimizer, param_groups
from train.trainer import Trainer, pretrain


@pytest.fixture(scope="module")
def texts(corpus_texts):
    return corpus_texts[:48]


# ---------------------------------------------------------------- arithmetic and optimizer


def test_gpt2_step_arithmetic():
    t = TrainSection()  # the defaults are the GPT-2 124M recipe
    one_gpu = batch_plan(t, seq_len=1024, world_size=1)
    assert (one_gpu.grad_accum_steps, one_gpu.max_steps) == (8, 19_073)  # 524,288 / (64*1024); 1e10 // 2**19
    eight = batch_plan(t, seq_len=1024, world_size=8)
    assert eight.grad_accum_steps == 1 and eight.total_batch_tokens == 64 * 1024 * 8
    assert "19,073 steps" in one_gpu.describe()
    with pytest.raises(ValueError, match=r"not a multiple of B x T x processes = 64 x 1024 x 3"):
        batch_plan(t, seq_len=1024, world_size=3)
    assert batch_plan(TrainSection(max_steps=7), 1024, 1).max_steps == 7


def test_lr_schedule_warmup_then_cosine_to_min():
    t = TrainSection(max_lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, t, 110) == pytest.approx(0.1)  # (0+1)/10: the first step already moves
    assert lr_at(9, t, 110) == pytest.approx(1.0)
    assert lr_at(10, t, 110) == pytest.approx(1.0)
    assert lr_at(60, t, 110) == pytest.approx(0.55)  # halfway through the cosine: (max+min)/2
    assert lr_at(110, t, 110) == pytest.approx(0.1) and lr_at(500, t, 110) == pytest.approx(0.1)
    lrs = [lr_at(s, t, 110) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_weight_decay_only_on_matrices():
    from model import GPT, GPTConfig

    model = GPT(GPTConfig.from_preset("tiny", n_layer=2, n_embd=32, n_head=2, block_size=16, vocab_size=100))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())  # every parameter once (tied wte counted once)
    opt = make_optimizer(model, TrainSection(), "cpu")
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8 and not opt.defaults["fused"]


# ---------------------------------------------------------------- learning, logging


def test_training_learns_and_writes_metrics_plot_and_summary(tmp_path, texts, capsys):
    _, cfg = make_project(tmp_path, texts, train={"max_steps": 24, "log_every": 4}, eval={"every": 12})
    result = pretrain(cfg)
    out = capsys.readouterr().out
    assert result.steps_done == 24 and len(result.losses) == 24
    # from ln(257) = 5.55 (uniform guessing) a byte-level model learns the byte frequencies in a few steps
    assert result.unigram_entropy < math.log(257)
    assert result.val_loss < math.log(257) - 1.0 and result.losses[-1] < result.losses[0] - 1.0
    records = [json.loads(line) for line in (cfg.out_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 25))
    assert [r["loss"] for r in train] == pytest.approx(result.losses)
    assert {"lr", "grad_norm", "tokens_per_sec", "dt", "eta_s"} <= set(train[0])
    assert [r["step"] for r in records if r["type"] == "val"] == [0, 12, 24]
    samples = [r for r in records if r["type"] == "sample"]
    assert samples and all(r["text"].startswith("I am a doctor, let me teach you about") for r in samples)
    assert (cfg.out_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((cfg.out_dir / "summary.json").read_text())
    assert summary["val_loss"] == pytest.approx(result.val_loss) and summary["step"] == 24
    # console: one line per log_every steps with the promised fields, and the banner's arithmetic
    assert "step      4/24 | loss" in out and "tok/s | MFU   n/a" in out and "ETA" in out
    assert "256 tokens/step = B 4 x T 32 x 1 process(es) x 2 micro-step(s)" in out
    assert "torch.compile off: the device is a CPU" in out


def test_gradient_accumulation_matches_one_big_batch(tmp_path, texts):
    """B=8 x 1 micro-step and B=4 x 2 micro-steps see the same windows: same losses and weights."""
    results, weights = [], []
    for name, b in (("big", 8), ("accum", 4)):
        _, cfg = make_project(tmp_path, texts, name=name, train={"micro_batch_size": b, "max_steps": 5},
                              eval={"every": 1000, "samples_per_prompt": 0})
        results.append(pretrain(cfg, log=False).losses)
        weights.append(torch.load(cfg.out_dir / "ckpt.pt", weights_only=True)["model"])
    assert results[0] == pytest.approx(results[1], rel=1e-5)
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-4, atol=1e-6)


def read_wandb_records(path: Path):
    """Records of a .wandb file, via wandb's own protobuf schema.

    The file is a 7-byte header (":W&B", magic, version) and then LevelDB log format: 32 KiB blocks of
    chunks, each (crc32c, length u16, type u8) + payload, type FULL=1, FIRST=2, MIDDLE=3, LAST=4.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, payload, records = 7, 32 * 1024, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too small for a header: skip to the next block
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        payload = chunk if kind in (1, 2) else payload + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(payload)
            records.append(rec)
    return records


def finished_wandb_records(path: Path, timeout: float = 60.0):
    """The records of an offline run once its last one ("exit") is on disk. wandb-core writes the file in
    its own process, and `run.finish()` can return before the tail lands (reading at once was flaky)."""
    import time

    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_wandb_records(path)
            if records and records[-1].WhichOneof("record_type") == "exit":
                return records
        except (AssertionError, struct.error, DecodeError):  # the header or a record not fully written yet
            pass
        assert time.monotonic() < deadline, f"{path}: no exit record after {timeout} s"
        time.sleep(0.1)


def test_wandb_offline_run_logs_the_metrics(tmp_path, texts, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-dir").mkdir()
    _, cfg = make_project(tmp_path, texts, train={"max_steps": 4},
                          wandb={"mode": "offline", "project": "lj-test", "run_name": "tiny-offline"},
                          eval={"every": 2, "samples_per_prompt": 0})
    result = pretrain(cfg, log=False)
    files = list((tmp_path / "wandb-dir").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history: dict[int, dict[str, float]] = {}
    summary, config = {}, {}
    for rec in finished_wandb_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            history[int(items["_step"])] = items
        elif kind == "summary":
            summary.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":  # the run record carries the config given to wandb.init
            assert rec.run.display_name == "tiny-offline" and rec.run.project == "lj-test"
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    logged = [history[s]["train/loss"] for s in range(1, 5)]
    assert logged == pytest.approx(result.losses)
    assert history[4]["val/val_loss"] == pytest.approx(result.val_loss)
    assert summary["val_loss"] == pytest.approx(result.val_loss)
    assert config["train"]["max_steps"] == 4 and config["model_config"]["n_embd"] == 32


# ---------------------------------------------------------------- bad input, before any step


def assert_nothing_trained(cfg):
    assert not (cfg.out_dir / "ckpt.pt").exists() and not (cfg.out_dir / "metrics.jsonl").exists()


def test_missing_and_corrupt_manifest(tmp_path, texts):
    _, cfg = make_project(tmp_path, texts)
    manifest = cfg.shards_dir / "manifest.json"
    manifest.write_text("{not json")
    with pytest.raises(ShardFormatError, match="manifest.json is not valid JSON"):
        Trainer(cfg)
    manifest.unlink()
    with pytest.raises(ShardFormatError, match="manifest.json not found"):
        Trainer(cfg)
    assert_nothing_trained(cfg)


def test_vocab_larger_than_the_model(tmp_path, texts):
    _, cfg = make_project(tmp_path, texts, model={"vocab_size": 200})
    with pytest.raises(ValueError, match=r"model.vocab_size = 200 is smaller than the vocabulary of the shards .* "
                                         r"\(257 ids\)"):
        Trainer(cfg)
    assert_nothing_trained(cfg)


def test_context_longer_than_the_val_split(tmp_path, texts):
    art = tmp_path / "artifacts"
    write_shards(art / "short", {"train": texts[:20], "val": ["tiny val"]})
    path = write_recipe(tmp_path / "short.toml", "short", art, {"model": {"preset": "tiny", "block_size": 32}})
    cfg = pretrain_config_from_recipe(load_recipe(path))
    with pytest.raises(ContextTooLongError, match=r"context longer than a shard split can supply.*'val' split has "
                                                  r"only 9 tokens"):
        Trainer(cfg)
    assert_nothing_trained(cfg)


def test_seq_len_beyond_block_size(tmp_path, texts):
    _, cfg = make_project(tmp_path, texts, train={"seq_len": 64})
    with pytest.raises(ValueError, match="train.seq_len = 64 exceeds the model's block_size 32"):
        Trainer(cfg)


def test_unknown_preset(tmp_path, texts):
    _, cfg = make_project(tmp_path, texts, model={"preset": "gpt5"})
    with pytest.raises(ValueError, match="unknown model preset 'gpt5'; known presets: gpt2"):
        Trainer(cfg)
    assert_nothing_trained(cfg)


@pytest.mark.parametrize("section,values,message", [
    ("train", {"learning_rate": 1e-3}, r"\[train\]: unknown key 'learning_rate' \(known keys: .*beta1"),
    ("train", {"micro_batch_size": "64"}, r"\[train\]: key 'micro_batch_size' must be int, got str '64'"),
    ("train", {"max_steps": True}, r"\[train\]: key 'max_steps' must be int, got bool True"),
    ("model", {"n_layer": 2.5}, r"\[model\]: key 'n_layer' must be int"),
    ("wandb", {"mode": "cloud"}, r"\[wandb\]: key 'mode' must be one of disabled\|offline\|online"),
    ("eval", {"prompts": ["ok", 3]}, r"\[eval\]: key 'prompts' must be a list of strings"),
    ("train", {"min_lr": 1.0, "max_lr": 0.1}, r"need 0 <= train.min_lr <= train.max_lr"),
])
def test_recipe_errors_name_the_key_and_the_file(tmp_path, section, values, message):
    path = write_recipe(tmp_path / "bad.toml", "bad", tmp_path, {section: values})
    with pytest.raises(ValueError, match=message) as info:
        pretrain_config_from_recipe(load_recipe(path))
    assert str(path) in str(info.value)


def test_mfu_arithmetic_for_gpt2():
    """6N + 12*L*H*Q*T for GPT-2 124M at T=1024; 460K tok/s on one H100 is ~40% MFU."""
    from model import GPT, GPTConfig
    from train.trainer import peak_flops

    cfg = GPTConfig.from_preset("gpt2")
    with torch.device("meta"):  # shapes only: no 124M-parameter init on the CPU
        model = GPT(cfg)
    n = model.num_params(non_embedding=True)
    assert n == 123_653_376
    fpt = model.flops_per_token(1024)
    assert fpt == 6 * 123_653_376 + 12 * 12 * 12 * 64 * 1024 == 855_166_464 == model.flops_per_token()
    assert model.flops_per_token(512) == 6 * 123_653_376 + 12 * 12 * 12 * 64 * 512
    assert fpt * 460_000 / 989e12 == pytest.approx(0.398, abs=1e-3)
    assert peak_flops("cpu", 0.0) is None and peak_flops("cpu", 312.0) == 312e12


def test_compile_policy_prints_a_reason():
    compiled, note = Trainer._maybe_compile("auto", "cpu")
    assert not compiled and "the device is a CPU" in note
    assert Trainer._maybe_compile("false", "cuda") == (False, "torch.compile off (train.compile = false)")
    assert Trainer._maybe_compile("true", "cpu")[0]
