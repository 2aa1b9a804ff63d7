"""Stage 2, `make tokenizer`: train the pure-Python BPE on the first N characters of the raw data.

    artifacts/<recipe>/tokenizer/tokenizer.ljt.json    our format (what the shards stage loads)
                                tokenizer.tiktoken     tiktoken's rank file
                                hf/tokenizer.json, hf/tokenizer_config.json   for HF tokenizers/transformers
                                report.json            bytes per token on held-out documents (+ GPT-2's)
                                manifest.json

The training sample is a prefix of the corpus, not a random draw: the first documents, each capped
at `max_chars_per_doc` characters (one huge document must not dominate the pair statistics),
until `max_characters` characters are collected. The LAST `heldout_documents` raw documents are
never trained on; they measure compression (UTF-8 bytes per token, higher is better), for our
tokenizer and, when GPT-2's files are given, for r50k_base on the very same text.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contract import manifest as mf
from contract.raw import count_raw_documents, iter_raw_documents
from contract.recipe import TOKENIZER_FILE, Recipe
from pipelines.stage_cli import stage_main
from tokenizer.atomic_write import write_json_atomic


class TokenizerStageError(ValueError):
    pass


def training_texts(raw_dir: Path, n_train_docs: int, budget: int, per_doc_cap: int) -> Iterator[str]:
    """The first documents, each capped, until the character budget is spent (the last one is cut)."""
    left = budget
    for i, (_, text) in enumerate(iter_raw_documents(raw_dir)):
        if i >= n_train_docs or left <= 0:
            return
        if per_doc_cap:
            text = text[:per_doc_cap]
        text = text[:left]
        left -= len(text)
        yield text


def heldout_texts(raw_dir: Path, first: int) -> list[str]:
    return [text for _, text in iter_raw_documents(raw_dir, start=first)]


def bytes_per_token(tok, texts: list[str]) -> dict[str, Any]:
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    n_tokens = sum(len(tok.encode_ordinary(t)) for t in texts)
    return {"name": tok.name, "n_vocab": tok.n_vocab, "bytes": n_bytes, "tokens": n_tokens,
            "bytes_per_token": round(n_bytes / max(1, n_tokens), 4)}


REPORT_ONLY_KEYS = ("gpt2_encoder_json", "gpt2_vocab_bpe")


def stage_config(recipe: Recipe) -> dict[str, Any]:
    """What the merges depend on. Not `workers` (counting is exact in any number of processes), and
    not the GPT-2 files: adding them to the report must not retrain a 50k vocabulary."""
    cfg = recipe.section("tokenizer")
    for key in ("workers", *REPORT_ONLY_KEYS):
        cfg.pop(key)
    return cfg


def stage_inputs(recipe: Recipe) -> dict[str, Any]:
    return {"raw_manifest_sha256": mf.manifest_fingerprint(recipe.stage_dir("raw"))}


def report_inputs(recipe: Recipe) -> dict[str, Any]:
    """The GPT-2 files the report compares with (sha256), if the recipe names them."""
    cfg = recipe.section("tokenizer")
    inputs: dict[str, Any] = {}
    if cfg["gpt2_encoder_json"] or cfg["gpt2_vocab_bpe"]:
        for key in ("gpt2_encoder_json", "gpt2_vocab_bpe"):
            p = Path(cfg[key])
            if not p.is_file():
                raise TokenizerStageError(f"{recipe.path} [tokenizer] {key}: {p} does not exist "
                                          "(give both GPT-2 files, encoder.json and vocab.bpe, or neither)")
            inputs[key + "_sha256"] = mf.sha256_file(p)
    return inputs


def run(recipe: Recipe, force: bool = False, progress_bar: bool = True, log=print) -> dict[str, Any]:
    from tokenizer import Tokenizer

    raw_dir, out_dir = recipe.stage_dir("raw"), recipe.stage_dir("tokenizer")
    cfg = stage_config(recipe)
    inputs = stage_inputs(recipe)
    compare = report_inputs(recipe)
    trained = not force and mf.is_up_to_date(out_dir, cfg, inputs)
    if trained and mf.read_manifest(out_dir).get("report_inputs") == compare:
        log(f"tokenizer: {out_dir} is up to date (FORCE=1 to redo)")
        return mf.read_manifest(out_dir)
    total = count_raw_documents(raw_dir)
    n_heldout = min(cfg["heldout_documents"], total // 2)   # never hold out more than half a tiny corpus
    n_train_docs = total - n_heldout
    if trained:   # only the report's comparison changed: keep the tokenizer, redo the report
        log("tokenizer: merges up to date, refreshing report.json")
        tok = Tokenizer.load(out_dir / TOKENIZER_FILE)
        training = mf.read_json(out_dir / "report.json")["training"]
        mf.remove_manifest(out_dir)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        mf.remove_manifest(out_dir)
        tok, training = _train(recipe, cfg, raw_dir, out_dir, n_train_docs, progress_bar, log)
    report = _report(tok, training, raw_dir, n_train_docs, cfg, recipe.section("tokenizer"), compare)
    write_json_atomic(out_dir / "report.json", report)

    outputs = [out_dir / TOKENIZER_FILE, out_dir / "tokenizer.tiktoken", out_dir / "hf" / "tokenizer.json",
               out_dir / "hf" / "tokenizer_config.json", out_dir / "report.json"]
    manifest = {
        "stage": "tokenizer",
        "recipe": recipe.name,
        "config": cfg,
        "inputs": inputs,
        "report_inputs": compare,
        "tokenizer": {"fingerprint": tok.fingerprint, "name": tok.name, "n_vocab": tok.n_vocab,
                      "eot_id": tok.eot_id, "special_tokens": tok.special_tokens, "file": TOKENIZER_FILE},
        "outputs": [mf.output_entry(p, out_dir) for p in outputs],
    }
    mf.write_manifest(out_dir, manifest)
    line = (f"tokenizer: {tok.n_vocab} tokens (trained in {training['seconds']:.1f} s); "
            f"held-out bytes/token {report['ours']['bytes_per_token']}")
    if report["gpt2"]:
        line += f" (GPT-2: {report['gpt2']['bytes_per_token']})"
    log(line + f" -> {out_dir}")
    return manifest


def _train(recipe, cfg, raw_dir, out_dir, n_train_docs, progress_bar, log):
    from tokenizer import Tokenizer

    texts = list(training_texts(raw_dir, n_train_docs, cfg["max_characters"], cfg["max_chars_per_doc"]))
    n_chars = sum(map(len, texts))
    log(f"tokenizer: training vocab {cfg['vocab_size']} on {n_chars:,} characters of {len(texts)} documents")
    t0 = time.perf_counter()
    workers = recipe.section("tokenizer")["workers"] or None
    tok = Tokenizer.train(texts, vocab_size=cfg["vocab_size"], special_tokens=tuple(cfg["special_tokens"]),
                          workers=workers, progress=progress_bar, name=recipe.name)
    train_seconds = time.perf_counter() - t0
    n_docs_used = len(texts)
    del texts

    tok.save(out_dir / TOKENIZER_FILE)
    tok.save_tiktoken(out_dir / "tokenizer.tiktoken")
    hf_tmp = out_dir / "hf.tmp"
    shutil.rmtree(hf_tmp, ignore_errors=True)
    tok.save_hf(hf_tmp)
    shutil.rmtree(out_dir / "hf", ignore_errors=True)
    hf_tmp.rename(out_dir / "hf")

    training = {"documents": n_docs_used, "characters": n_chars, "seconds": round(train_seconds, 2),
                "vocab_size": tok.n_vocab}
    return tok, training


def _report(tok, training, raw_dir, n_train_docs, cfg, section, compare) -> dict[str, Any]:
    from tokenizer import Tokenizer

    heldout = heldout_texts(raw_dir, n_train_docs)
    report: dict[str, Any] = {"training": training, "heldout_documents": len(heldout),
                              "ours": bytes_per_token(tok, heldout), "gpt2": None}
    if compare:
        gpt2 = Tokenizer.from_gpt2_files(section["gpt2_encoder_json"], section["gpt2_vocab_bpe"],
                                         name="gpt2 (r50k_base)")
        report["gpt2"] = bytes_per_token(gpt2, heldout)
    return report


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, "make tokenizer: train the BPE tokenizer on the raw documents", (TokenizerStageError,), argv)


if __name__ == "__main__":
    sys.exit(main())
