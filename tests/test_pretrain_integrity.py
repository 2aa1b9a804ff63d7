"""Nothing read from disk is trusted: shards are hashed and range-checked by their consumer, and a model is
built from a checkpoint's (or a transformers directory's) config only once its tensors agree with it."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch
from pretrain_helpers import ROOT, byte_tokenizer, cli_env, error_lines, make_project, snapshot

from harness.synthetic_shards import write_shards as write_token_shards
from model import GPT, GPTConfig
from model.hf import export_hf
from pipelines import evaluate, pretrain

MEMORY_LIMIT = 8 << 30  # a child that would build a model its config invents fails fast instead of swapping


@pytest.fixture(scope="module")
def texts(corpus_texts):
    return corpus_texts[:48]


def flip_one_token(shard, keep_below: int) -> int:
    """Change one token of an npy shard in place, to another id < keep_below: same size, other bytes."""
    tokens = np.load(shard, mmap_mode="r")
    i = int(np.flatnonzero(tokens < keep_below - 1)[10])
    offset = shard.stat().st_size - tokens.nbytes + i * tokens.itemsize  # after the npy header
    del tokens
    with open(shard, "r+b") as f:
        f.seek(offset)
        value = int.from_bytes(f.read(2), "little")
        f.seek(offset)
        f.write((value + 1).to_bytes(2, "little"))
    return i


def test_a_same_size_edit_of_a_shard_is_refused_by_training_and_eval(tmp_path, texts, capsys):
    recipe, cfg = make_project(tmp_path, texts, train={"max_steps": 2}, eval={"every": 2, "samples_per_prompt": 0})
    shard = cfg.shards_dir / "train_000000.npy"
    size = shard.stat().st_size
    flip_one_token(shard, keep_below=256)
    assert shard.stat().st_size == size  # all that opening the shards checks

    assert pretrain.main(["--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [f"error: {shard}: sha256 does not match the shards' manifest (the file changed after "
                                "`make shards` wrote it); rebuild the shards: make shards FORCE=1"]
    assert not cfg.out_dir.exists() or not any(cfg.out_dir.iterdir())  # nothing trained, nothing written

    # make eval reads the val split through the same check
    _, good = make_project(tmp_path / "good", texts, train={"max_steps": 2}, eval={"every": 2, "samples_per_prompt": 0})
    good_recipe = tmp_path / "good" / "t.toml"
    assert pretrain.main(["--config", str(good_recipe)]) == 0
    val = good.shards_dir / "val_000000.npy"
    flip_one_token(val, keep_below=256)
    capsys.readouterr()
    assert evaluate.main(["--config", str(good_recipe)]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and f"error: {val}: sha256 does not match" in err


def test_token_ids_beyond_the_vocabulary_are_one_error_line(tmp_path, texts, capsys):
    recipe, cfg = make_project(tmp_path, texts, train={"max_steps": 2})
    tok = byte_tokenizer()
    docs = [tok.encode_ordinary(t) for t in texts]
    docs[0] = docs[0][:50] + [300] + docs[0][50:]  # a manifest that says vocab 257, and a checksum that matches
    write_token_shards(cfg.shards_dir, {"train": docs[:-8], "val": docs[-8:]}, vocab_size=tok.n_vocab,
                       eot_id=tok.eot_id, tokenizer_fingerprint=tok.fingerprint,
                       tokenizer_path="../tokenizer/tokenizer.ljt.json", shard_tokens=8192)
    assert pretrain.main(["--config", str(recipe)]) == 2  # was: IndexError (a device-side assert on CUDA)
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()]
    assert err.startswith(f"error: {cfg.shards_dir / 'train_000000.npy'}: token id 300 is outside the vocabulary "
                          "of 257 ids") and "make shards FORCE=1" in err


def run_limited(script: str, *args: str) -> subprocess.CompletedProcess:
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=cli_env(), capture_output=True,
                          text=True, timeout=120, preexec_fn=limit_memory)


# eval, sample and the HF export of one checkpoint, in one process (imports once), each reporting its code
CHECKPOINT_CONSUMERS = r"""
import sys
from pipelines import evaluate, hf, sample
recipe, ckpt, out = sys.argv[1:]
codes = [evaluate.main(["--config", recipe]), sample.main(["--config", recipe, "--tokens", "4", "--num", "1"]),
         hf.main(["export", ckpt, out])]
print("CODES", codes)
"""


def tamper(ckpt, edit) -> None:
    state = torch.load(ckpt, weights_only=True)
    edit(state)
    torch.save(state, ckpt)


def trained_checkpoint(tmp_path, texts, capsys):
    recipe, cfg = make_project(tmp_path, texts, train={"max_steps": 2}, eval={"every": 2, "samples_per_prompt": 0})
    assert pretrain.main(["--config", str(recipe)]) == 0
    capsys.readouterr()
    return recipe, cfg.out_dir / "ckpt.pt"


def test_checkpoint_claiming_a_million_layers_is_refused_before_any_model_is_built(tmp_path, texts, capsys):
    """Was: `make eval` spent minutes building blocks, the HF export ran out of memory (a child process with
    a memory limit here, so that such a failure is quick and harmless)."""
    recipe, ckpt = trained_checkpoint(tmp_path, texts, capsys)
    tamper(ckpt, lambda s: s["model_config"].update(n_layer=10**6))
    proc = run_limited(CHECKPOINT_CONSUMERS, str(recipe), str(ckpt), str(tmp_path / "hf"))
    assert "CODES [2, 2, 2]" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert error_lines(proc.stderr) == 3 * [f"error: {ckpt}: model_config does not match the weights: "
                                            "n_layer: config says 1000000, the tensors hold 2"]
    assert not (tmp_path / "hf" / "config.json").exists()


def transpose_one_weight(state, key="transformer.h.1.mlp.c_fc.weight"):
    state["model"][key] = state["model"][key].t()  # what a Conv1D-layout (HF) tensor pasted in would look like


@pytest.mark.parametrize("edit,problem", [
    (lambda s: s["model_config"].update(n_embd=64), "n_embd: config says 64, the tensors hold 32"),
    (transpose_one_weight, "transformer.h.1.mlp.c_fc.weight: the config implies (128, 32), the file holds (32, 128)"),
], ids=["width", "one-tensor"])
def test_checkpoint_shapes_that_do_not_fit_the_model_are_one_error_line(tmp_path, texts, capsys, edit, problem):
    recipe, ckpt = trained_checkpoint(tmp_path, texts, capsys)
    tamper(ckpt, edit)
    from pipelines import hf, sample

    codes = [evaluate.main(["--config", str(recipe)]), sample.main(["--config", str(recipe), "--tokens", "4"]),
             hf.main(["export", str(ckpt), str(tmp_path / "hf")]),  # was: RuntimeError "size mismatch" tracebacks
             pretrain.main(["--config", str(recipe), "--set", "train.max_steps=4", "--resume"])]
    assert codes == [2, 2, 2, 2]
    assert error_lines(capsys.readouterr().err) == 4 * [
        f"error: {ckpt}: model_config does not match the weights: {problem}"]


def test_transformers_config_contradicted_by_its_tensors_is_refused(tmp_path):
    directory = tmp_path / "gpt"
    export_hf(GPT(GPTConfig.from_preset("tiny", n_layer=2, n_embd=32, n_head=2, block_size=32, vocab_size=257)),
              directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "n_layer": 10**6}))
    proc = run_limited("from pipelines import hf; import sys; sys.exit(hf.main(sys.argv[1:]))", "check",
                       str(directory))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert error_lines(proc.stderr) == [f"error: {config_path}: n_layer: config says 1000000, the tensors hold 2; "
                                        "the config does not describe these weights"]

    config_path.write_text(json.dumps({**config, "n_positions": 4096}))  # a context the weights do not have
    from model.hf import load_hf_gpt2

    with pytest.raises(ValueError, match=r"config.json: block_size: config says 4096, the tensors hold 32"):
        load_hf_gpt2(directory)
    assert snapshot(directory)["config.json"] == config_path.read_bytes()  # reading never writes
