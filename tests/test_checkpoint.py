"""Checkpoints: exact resume, atomic writes, weights_only loading, refusing incompatible resumes."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from pretrain_helpers import byte_tokenizer, make_project, tiny_sections, write_recipe, write_shards

from contract.recipe import load_recipe
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.config import pretrain_config_from_recipe
from train.trainer import pretrain


@pytest.fixture(scope="module")
def texts(corpus_texts):
    return corpus_texts[:48]


def test_n_plus_resume_plus_n_equals_2n_straight(tmp_path, texts):
    """Same loss sequence, bit for bit, and the same final weights and optimizer state."""
    changes = dict(train={"max_steps": 8, "checkpoint_every": 3}, eval={"every": 4, "samples_per_prompt": 1})
    _, straight = make_project(tmp_path, texts, name="straight", **changes)
    full = pretrain(straight, log=False)

    _, split = make_project(tmp_path, texts, name="split", **changes)
    first = pretrain(split, stop_at_step=4, log=False)
    assert first.steps_done == 4 and load_checkpoint(split.out_dir)["step"] == 4
    second = pretrain(split, resume=True, log=False)
    assert second.steps_done == 8
    assert first.losses + second.losses == full.losses  # exact equality, not approx

    a, b = load_checkpoint(straight.out_dir), load_checkpoint(split.out_dir)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["loader"] == b["loader"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    # metrics.jsonl of the resumed run tells the same story as the straight one
    def train_losses(cfg):
        lines = (cfg.out_dir / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["type"] == "train"]

    assert train_losses(split) == train_losses(straight) == full.losses
    assert second.samples == full.samples  # sampling does not touch the training RNG or data order


def test_checkpoint_contents_are_weights_only_safe(tmp_path, texts):
    _, cfg = make_project(tmp_path, texts, train={"max_steps": 2}, eval={"samples_per_prompt": 0})
    pretrain(cfg, log=False)
    path = cfg.out_dir / "ckpt.pt"
    state = torch.load(path, weights_only=True)  # would raise on any non-tensor/primitive object
    assert state["step"] == 2 and state["loader"]["consumed"] == 2 * 2 * 4
    assert state["tokenizer_fingerprint"] == byte_tokenizer().fingerprint
    assert state["model_config"]["n_embd"] == 32 and state["config"]["train"]["max_steps"] == 2
    assert isinstance(state["rng"][0]["torch_cpu"], torch.Tensor)
    assert not list(cfg.out_dir.glob("*.tmp"))  # no temporary file left behind


def test_save_is_atomic_and_loading_rejects_foreign_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(2)}, "model_config": {}, "tokenizer_fingerprint": "x"})
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")  # the write fails half-way

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 2, "model": Unpicklable()})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "llm-journey-checkpoint/1", "x": Unpicklable.__init__}, protocol=2))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(evil)
    other = tmp_path / "other.pt"
    torch.save({"step": 3}, other)
    with pytest.raises(CheckpointError, match="is not a checkpoint of this project"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing")


def test_resume_refuses_another_model_config(tmp_path, texts):
    path, cfg = make_project(tmp_path, texts, train={"max_steps": 2}, eval={"samples_per_prompt": 0})
    pretrain(cfg, log=False)
    changed = write_recipe(path, "t", tmp_path / "artifacts", tiny_sections(model={"n_embd": 64},
                                                                           train={"max_steps": 4}))
    with pytest.raises(CheckpointError, match="different model config \\(n_embd: checkpoint 32 vs recipe 64\\)"):
        pretrain(pretrain_config_from_recipe(load_recipe(changed)), resume=True, log=False)


def test_resume_refuses_shards_of_another_tokenizer(tmp_path, texts):
    path, cfg = make_project(tmp_path, texts, train={"max_steps": 2}, eval={"samples_per_prompt": 0})
    pretrain(cfg, log=False)
    steps_before = load_checkpoint(cfg.out_dir)["step"]
    # same ids for ordinary text, but a different encoding: a different fingerprint
    write_shards(tmp_path / "artifacts" / "t", {"train": texts[:-8], "val": texts[-8:]},
                 tokenizer=byte_tokenizer(extra_special="<|pad|>"))
    with pytest.raises(CheckpointError, match="tokenizer fingerprint mismatch"):
        pretrain(cfg, resume=True, log=False)
    assert load_checkpoint(cfg.out_dir)["step"] == steps_before


def test_resume_without_a_checkpoint(tmp_path, texts):
    _, cfg = make_project(tmp_path, texts)
    with pytest.raises(CheckpointError, match="no checkpoint at .*ckpt.pt \\(train first"):
        pretrain(cfg, resume=True, log=False)
