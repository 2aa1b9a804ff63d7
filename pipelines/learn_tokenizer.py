"""Stage 2, `make tokenizer`: train the pure-Python BPE on the first N characters of the raw data,
or take a ready-made tokenizer (`[tokenizer] use`, below).

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

`[tokenizer] use` picks where the tokenizer comes from:
    use = "train"                        learn merges on the raw documents (the default, above)
    use = "gpt2"                         GPT-2's r50k_base: gpt2_encoder_json + gpt2_vocab_bpe when both are
                                         given, else vocab.json + merges.txt of openai-community/gpt2 from
                                         the hub (huggingface_hub's cache; offline with HF_HUB_OFFLINE=1)
    use = "path/tokenizer.ljt.json"      a file you bring: ours (.ljt.json), tiktoken's (.tiktoken, .gz too),
    use = "path/cl100k_base.tiktoken"    HF tokenizers' tokenizer.json, or a directory holding one of them
    use = "path/tokenizer.json"          (or GPT-2's encoder.json + vocab.bpe, or vocab.json + merges.txt)
Whatever the source, the stage writes the same files and the same manifest as after training, so the
shards stage and everything after it cannot tell the difference; the tokenizer gets the chat tokens it
lacks (after its own ids: GPT-2's ordinary text still encodes exactly as r50k_base, <|endoftext|> is still
50256). The training keys (vocab_size, max_characters, max_chars_per_doc, special_tokens) do not apply;
heldout_documents still measures bytes per token, and the source file's sha256 is an input: an edited
file is taken again.

Read first: `_train` (the texts -> tokenizer/core.py `Tokenizer.train` -> tokenizer/learn_bpe.py, whose
readable twin is tokenizer/reference_bpe.py `train_merges`). Bookkeeping a first reading may skip (marked
`# bookkeeping:`): the up-to-date check and report refresh in `run`, ready-made tokenizers
(`tokenizer_source`, `take_tokenizer`).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import manifest as mf
from contract.raw import RAW_MANIFEST, count_raw_documents, iter_raw_documents
from contract.recipe import TOKENIZER_FILE, Recipe
from pipelines.executors import LOCAL, RAY
from pipelines.stage_cli import stage_main
from tokenizer.atomic_write import write_json_atomic
from tokenizer.chat import CHAT_SPECIAL_TOKENS, special_tokens_with_chat

TRAIN = "train"
GPT2 = "gpt2"
GPT2_REPO = "openai-community/gpt2"


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
# report.json as a rerun reads it back (only the training facts are reused)
REPORT = {"training": {"documents": int, "characters": int, "seconds": float, "vocab_size": int}}
# this stage's own manifest: what later stages read, plus what the report was compared with
OWN_MANIFEST = {**mf.TOKENIZER_MANIFEST, "report_inputs": dict}


def stage_config(recipe: Recipe) -> dict[str, Any]:
    """What the merges depend on. Not `workers` (counting is exact in any number of processes), and
    not the GPT-2 files: adding them to the report must not retrain a 50k vocabulary. A tokenizer taken
    ready-made (`use`) depends on which one, the chat tokens added to it and the held-out report; `use`
    is left out when training, so a tokenizer trained before the key existed stays up to date."""
    cfg = recipe.section("tokenizer")
    use = cfg.pop("use")
    for key in ("workers", *REPORT_ONLY_KEYS):
        cfg.pop(key)
    if use != TRAIN:
        return {"use": use, "added_special_tokens": list(CHAT_SPECIAL_TOKENS),
                "heldout_documents": cfg["heldout_documents"]}
    # Every tokenizer we train can chat: the chat format's special tokens (tokenizer/chat.py) come first,
    # so <|endoftext|> keeps the last id. Recorded here, so a tokenizer made before them is retrained.
    cfg["special_tokens"] = special_tokens_with_chat(cfg["special_tokens"])
    return cfg


def stage_inputs(recipe: Recipe, source: TokenizerSource | None = None) -> dict[str, Any]:
    inputs = {"raw_manifest_sha256": mf.manifest_fingerprint(recipe.stage_dir("raw"), RAW_MANIFEST)}
    if source is not None:
        inputs["source_sha256"] = mf.fingerprint([mf.sha256_file(p) for p in source.files])
    return inputs


# ------------------------------------------------------------------------------ a ready-made tokenizer
@dataclass
class TokenizerSource:
    """Where `[tokenizer] use` takes the tokenizer from: what to call it, its files, how to load them."""

    label: str
    files: list[Path]
    load: Callable[[], Any]


def tokenizer_source(recipe: Recipe) -> TokenizerSource:
    """The source `use` names (GPT-2's files come from the hub when the recipe gives none)."""
    from tokenizer import Tokenizer

    section = recipe.section("tokenizer")
    use = section["use"]
    where = f"{recipe.path} [tokenizer] use = {use!r}"
    if use == GPT2:
        if section["gpt2_encoder_json"] and section["gpt2_vocab_bpe"]:
            files = [Path(section["gpt2_encoder_json"]).expanduser(), Path(section["gpt2_vocab_bpe"]).expanduser()]
            for f in files:
                if not f.is_file():
                    raise TokenizerStageError(f"{where}: {f} (gpt2_encoder_json / gpt2_vocab_bpe) does not exist")
            label = f"GPT-2 (r50k_base) from {files[0].parent}"
        else:
            from tokenizer.hub import hub_snapshot

            folder = hub_snapshot(GPT2_REPO, ["vocab.json", "merges.txt"],
                                  what='GPT-2\'s tokenizer (tokenizer.use = "gpt2")')
            files, label = [folder / "vocab.json", folder / "merges.txt"], f"GPT-2 (r50k_base) from the hub {GPT2_REPO}"
        return TokenizerSource(label, files, lambda: Tokenizer.from_gpt2_files(*files, name=GPT2))
    path = Path(use).expanduser()
    if path.is_dir():
        for names in (("tokenizer.ljt.json",), ("tokenizer.json",), ("encoder.json", "vocab.bpe"),
                      ("vocab.json", "merges.txt")):
            if all((path / n).is_file() for n in names):
                return _file_source(path / names[0], [path / n for n in names])
        raise TokenizerStageError(f"{where}: {path} holds no tokenizer.ljt.json, tokenizer.json, "
                                  "encoder.json + vocab.bpe or vocab.json + merges.txt")
    if not path.is_file():
        raise TokenizerStageError(f"{where}: {path} does not exist (use \"train\", \"gpt2\", or the path of a "
                                  ".ljt.json, .tiktoken or tokenizer.json file)")
    return _file_source(path, [path])


def _file_source(path: Path, files: list[Path]) -> TokenizerSource:
    from tokenizer import Tokenizer
    from tokenizer.formats import load_hf_tokenizer_json

    name = path.name
    if len(files) == 2:   # GPT-2's two-file format, under either of its names
        load = lambda: Tokenizer.from_gpt2_files(*files, name=path.parent.name or "gpt2")  # noqa: E731
    elif name.endswith(".ljt.json"):
        load = lambda: Tokenizer.load(path)  # noqa: E731
    elif name.endswith((".tiktoken", ".tiktoken.gz")):
        load = lambda: Tokenizer.from_tiktoken(path)  # noqa: E731
    elif name.endswith(".json"):
        load = lambda: load_hf_tokenizer_json(Tokenizer, path)  # noqa: E731
    else:
        raise TokenizerStageError(f"{path}: not a tokenizer file this stage reads (.ljt.json, .tiktoken, "
                                  ".tiktoken.gz, tokenizer.json)")
    return TokenizerSource(str(path), files, load)


def take_tokenizer(source: TokenizerSource, out_dir: Path, log) -> tuple[Any, dict[str, Any]]:
    """Load the tokenizer `use` names, give it the chat tokens, write it like a trained one."""
    from tokenizer.chat import with_chat_tokens
    from tokenizer.formats import TokenizerFileError

    t0 = time.perf_counter()
    try:
        original = source.load()
    except TokenizerFileError as exc:
        raise TokenizerStageError(f"tokenizer.use: {exc}") from None
    if original.eot_id is None:
        raise TokenizerStageError(f"{source.label}: the tokenizer has no <|endoftext|> token, which the shards "
                                  "put before every document")
    tok = with_chat_tokens(original)
    added = tok.n_vocab - original.n_vocab
    log(f"tokenizer: taking {original.name} ({original.n_vocab:,} tokens) from {source.label}"
        + (f", plus {added} chat tokens" if added else ""))
    write_tokenizer_files(tok, out_dir)
    taken = {"source": source.label, "files": [str(p) for p in source.files], "original_fingerprint":
             original.fingerprint, "seconds": round(time.perf_counter() - t0, 2), "vocab_size": tok.n_vocab}
    return tok, taken


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


def run(recipe: Recipe, force: bool = False, progress_bar: bool = True, log=print,
        executor: str = LOCAL) -> dict[str, Any]:
    from tokenizer import Tokenizer

    raw_dir, out_dir = recipe.stage_dir("raw"), recipe.stage_dir("tokenizer")
    cfg = stage_config(recipe)
    source = tokenizer_source(recipe) if recipe.section("tokenizer")["use"] != TRAIN else None
    inputs = stage_inputs(recipe, source)
    compare = report_inputs(recipe)
    # bookkeeping: leftovers of a killed run, the up-to-date check, what changed; the training itself is _train
    mf.remove_leftovers(out_dir)   # `*.tmp` files (and the hf.tmp directory) of a killed run
    fresh = mf.Freshness("forced") if force else mf.is_up_to_date(out_dir, cfg, inputs, OWN_MANIFEST)
    redo = "retraining" if source is None else "replacing the tokenizer"
    if fresh.damaged:
        log(f"tokenizer: {fresh.reason}: {redo}")
    elif fresh.changed:   # say why the tokenizer (and so every shard made with it) is about to change
        log(f"tokenizer: {_use_switch(out_dir, recipe) or fresh.reason}: {redo}")
    trained = bool(fresh)
    if trained and mf.read_manifest(out_dir, OWN_MANIFEST)["report_inputs"] == compare:
        log(f"tokenizer: {out_dir} is up to date (FORCE=1 to redo)")
        return mf.read_manifest(out_dir, OWN_MANIFEST)
    total = count_raw_documents(raw_dir)
    n_heldout = min(cfg["heldout_documents"], total // 2)   # never hold out more than half a tiny corpus
    n_train_docs = total - n_heldout
    if source is not None:   # ready-made: taking it again costs next to nothing
        out_dir.mkdir(parents=True, exist_ok=True)
        mf.remove_manifest(out_dir)
        tok, training = take_tokenizer(source, out_dir, log)
    elif trained:   # only the report's comparison changed: keep the tokenizer, redo the report
        log("tokenizer: merges up to date, refreshing report.json")
        tok = Tokenizer.load(out_dir / TOKENIZER_FILE)
        training = mf.read_json(out_dir / "report.json", REPORT)["training"]
        mf.remove_manifest(out_dir)
    else:
        if executor == RAY:   # before anything is changed: Ray is installed, the cluster answers
            from pipelines.executors.ray_cluster import preflight

            preflight()
        out_dir.mkdir(parents=True, exist_ok=True)
        mf.remove_manifest(out_dir)
        tok, training = _train(recipe, cfg, raw_dir, out_dir, n_train_docs, progress_bar, log, executor)
    report = _report(tok, training, raw_dir, n_train_docs, cfg, recipe.section("tokenizer"), compare)
    if source is not None:   # not trained: say where it came from instead
        report["taken"] = report.pop("training")
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
    how = "taken, not trained: tokenizer.use" if source is not None else f"trained in {training['seconds']:.1f} s"
    line = f"tokenizer: {tok.n_vocab} tokens ({how}); held-out bytes/token {report['ours']['bytes_per_token']}"
    if report["gpt2"]:
        line += f" (GPT-2: {report['gpt2']['bytes_per_token']})"
    log(line + f" -> {out_dir}")
    return manifest


def _train(recipe, cfg, raw_dir, out_dir, n_train_docs, progress_bar, log, executor=LOCAL):
    from tokenizer import Tokenizer

    if executor == RAY:   # the same merges: pre-tokens counted by tasks on the cluster, merges learned here
        from pipelines.executors.ray_tokenizer import train_on_ray

        tok, n_docs_used, n_chars, train_seconds = train_on_ray(raw_dir, cfg, n_train_docs, recipe.name, log,
                                                                 progress_bar)
    else:
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

    write_tokenizer_files(tok, out_dir)
    training = {"documents": n_docs_used, "characters": n_chars, "seconds": round(train_seconds, 2),
                "vocab_size": tok.n_vocab}
    return tok, training


def _use_switch(out_dir: Path, recipe: Recipe) -> str | None:
    """"the recipe changed (tokenizer.use: train -> gpt2)" when the source itself changed: said first, rather
    than the training keys that appear or go with it (a trained tokenizer's config has no `use`)."""
    try:
        old = mf.read_manifest(out_dir, remedy="")
    except mf.ManifestError:
        return None
    before = old["config"].get("use", TRAIN) if old else TRAIN
    now = recipe.section("tokenizer")["use"]
    return f"the recipe changed (tokenizer.use: {before} -> {now})" if old and before != now else None


def write_tokenizer_files(tok, out_dir: Path) -> None:
    """The stage's tokenizer files, whichever way the tokenizer came: ours, tiktoken's, HF's (hf/ as a whole)."""
    tok.save(out_dir / TOKENIZER_FILE)
    tok.save_tiktoken(out_dir / "tokenizer.tiktoken")
    hf_tmp = out_dir / "hf.tmp"
    shutil.rmtree(hf_tmp, ignore_errors=True)
    tok.save_hf(hf_tmp)
    shutil.rmtree(out_dir / "hf", ignore_errors=True)
    hf_tmp.rename(out_dir / "hf")


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
    return stage_main(run, "make tokenizer: train the BPE tokenizer on the raw documents (or take the one "
                           "[tokenizer] use names)", (TokenizerStageError,), argv,
                      stage="tokenizer", stage_dir="tokenizer", prog="python -m pipelines.learn_tokenizer")


if __name__ == "__main__":
    sys.exit(main())
