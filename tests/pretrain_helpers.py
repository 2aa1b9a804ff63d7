"""Small real inputs for the pretraining tests: a byte-level tokenizer, shards, recipes.

The tokenizer is GPT-2's 256 byte tokens + <|endoftext|> (no merges): built instantly, yet a real
Tokenizer file the stage loads, so samples and HellaSwag go through the production path. Shards are
written by harness.synthetic_shards (contract.shard_format's ShardWriter + a manifest in the reader's schema).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.synthetic_shards import write_shards as write_token_shards
from tokenizer import Tokenizer
from tokenizer.byte_order import BYTE_ORDER

EOT = "<|endoftext|>"


def byte_tokenizer(extra_special: str | None = None) -> Tokenizer:
    ranks = {bytes([BYTE_ORDER[i]]): i for i in range(256)}
    specials = {EOT: 256}
    if extra_special:  # a different encoding (other fingerprint) with the same ids for ordinary text
        specials[extra_special] = 257
    return Tokenizer(ranks, specials, name="bytes")


def write_shards(root: Path, docs: dict[str, list[str]], tokenizer: Tokenizer | None = None,
                 shard_tokens: int = 8192, fmt: str = "npy") -> Path:
    """root/tokenizer/tokenizer.ljt.json + root/shards/{manifest.json, shards}; returns the shards dir."""
    tokenizer = tokenizer or byte_tokenizer()
    tok_dir = root / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(tok_dir / "tokenizer.ljt.json")
    splits = {split: [tokenizer.encode_ordinary(t) for t in texts] for split, texts in docs.items()}
    return write_token_shards(root / "shards", splits, vocab_size=tokenizer.n_vocab, eot_id=tokenizer.eot_id,
                              tokenizer_fingerprint=tokenizer.fingerprint,
                              tokenizer_path="../tokenizer/tokenizer.ljt.json", shard_tokens=shard_tokens, fmt=fmt)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_recipe(path: Path, name: str, artifacts_root: Path, sections: dict[str, dict]) -> Path:
    lines = [f"name = {json.dumps(name)}", f"artifacts_root = {json.dumps(str(artifacts_root))}"]
    for section, values in sections.items():
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


TINY_MODEL = {"preset": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}
TINY_TRAIN = {"micro_batch_size": 4, "total_batch_tokens": 256, "max_steps": 8, "max_lr": 3e-3, "min_lr": 3e-4,
              "warmup_steps": 2, "checkpoint_every": 100, "log_every": 100,
              "cpu_threads": 1}  # one thread: tiny matmuls gain nothing from more, and the machine is shared
TINY_EVAL = {"every": 4, "val_tokens": 256, "samples_per_prompt": 1, "sample_tokens": 8}


def tiny_sections(**changes: dict) -> dict[str, dict]:
    """The tiny recipe sections with per-section updates, e.g. tiny_sections(train={"max_steps": 4})."""
    sections = {"model": dict(TINY_MODEL), "train": dict(TINY_TRAIN), "eval": dict(TINY_EVAL)}
    for section, values in changes.items():
        sections.setdefault(section, {}).update(values)
    return sections


def make_project(tmp: Path, texts: list[str], name: str = "t", n_val: int = 8, **changes: dict):
    """A recipe whose artifacts/<name>/shards hold `texts` (the last n_val documents are val)."""
    from contract.recipe import load_recipe
    from train.config import pretrain_config_from_recipe

    art = tmp / "artifacts"
    write_shards(art / name, {"train": texts[:-n_val], "val": texts[-n_val:]})
    path = write_recipe(tmp / f"{name}.toml", name, art, tiny_sections(**changes))
    return path, pretrain_config_from_recipe(load_recipe(path))


# ---------------------------------------------------------------- the stage as a command, in a real process
ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a child `python -m pipelines.*`: this checkout first, one thread (tiny models)."""
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def start_stage(module: str, *args: str, **popen):
    """`python -m pipelines.<module> ARGS` as a child process (stdout/stderr piped), for signals and races."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", f"pipelines.{module}", *args], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for(condition, timeout: float = 60.0, what: str = "condition", proc=None) -> None:
    """Poll until condition() is true; fail with the child's output if it exits or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"child exited with {proc.returncode} before {what}:\n{out[-2000:]}\n{err[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file directly in `directory`, by name: equal snapshots = byte-identical files."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]
