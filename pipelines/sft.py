"""Stage `make sft`: fine-tune a pretrained GPT on conversations, so that it answers questions.

    python -m pipelines.sft --config configs/demo.toml [--init PATH] [--resume | --force] [--set sft.max_steps=100]
    torchrun --standalone --nproc_per_node=8 -m pipelines.sft --config configs/sft-smoltalk.toml

What it does, in order:
1. The base model: the recipe's pretraining checkpoint (artifacts/<recipe>/pretrain/ckpt.pt), a checkpoint
   given with --init / [sft] init, or a transformers GPT-2 directory (model/hf.py). Its tokenizer must
   have the chat tokens (tokenizer/chat.py); GPT-2's vocabulary gets them in its padded rows.
2. The conversations ([sft] source), checked, rendered with the chat format and cut to the context, into
   artifacts/<recipe>/sft-data/{train,val}.npz + manifest.json (what was skipped or cut, and why). The
   held-out conversations are chosen by a hash of their id. Rebuilt only when the source, the [sft] data
   keys or the tokenizer change.
3. Training: the pretraining loop itself (train/trainer.py) with the conversations as data
   (train/sft_data.py), so the loss is on assistant tokens only and everything else -- optimizer,
   schedule, precision, compile, DDP, logging, exact resume, atomic checkpoints -- is shared. Step 0
   measures the base model on the held-out conversations; every eval_every steps the held-out loss and
   the answers to [sft] questions are logged again.
4. artifacts/<recipe>/sft/: ckpt.pt, metrics.jsonl, loss.png, summary.json, the chat tokenizer
   (tokenizer.ljt.json, and hf/ with a chat_template for transformers), and manifest.json, written last:
   the base checkpoint's sha256, the tokenizer's fingerprint, the held-out loss before and after.

Reruns follow pretraining's rules (train/run_dir.py): a finished run with the same inputs is "up to date";
another run in the directory is refused unless --resume or --force says what to do with it.

Read first: train/sft_data.py (targets -1 wherever the loss mask is 0, conversations packed into rows), then
`_train`. Bookkeeping a first reading may skip: `resolve_base`, `run_identity`, `decide`, the data manifest.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.stage_cli import add_common_flags, run_reported

DATA_SUFFIX = "-data"  # the rendered conversations live beside the run: artifacts/<recipe>/sft-data/
TOKENIZER_NAME = "tokenizer.ljt.json"
ENCODE_CHUNK = 4096  # conversations encoded per encode_batch call
EXAMPLES_KEPT = 5    # skipped/cut conversations named in the data manifest, per reason
# [sft] keys that cannot change the fine-tuned weights (a run differing only in these is the same run)
SFT_NOT_IDENTITY = ("checkpoint_every", "log_every", "workers", "out_dir", "questions", "answer_tokens",
                    "temperature", "eval_every")


# ------------------------------------------------------------------------------------ the base model
@dataclass
class Base:
    """The model fine-tuning starts from, with the tokenizer its ids belong to."""

    kind: str                      # "checkpoint" | "transformers"
    path: Path
    weights: dict                  # state dict, in our layout (padded vocabulary rows)
    model_config: dict[str, Any]
    tokenizer: Any
    sha256: str                    # of the weight file(s): which base, exactly
    step: int | None = None

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "sha256": self.sha256, "step": self.step,
                "tokenizer_fingerprint": self.tokenizer.fingerprint}


def resolve_base(recipe, sft, init: str | None) -> Base:
    """The base model named by --init, else [sft] init, else the recipe's pretraining checkpoint.

    As train.init_from reads it: a ckpt.pt (or a directory holding one) is ours; anything else is transformers
    GPT-2 weights, a local directory or a hub id such as "gpt2" (model/hf.resolve_hf_checkpoint: the HF cache)."""
    spec = init or sft.init
    if not spec:
        return checkpoint_base(recipe, recipe.stage_dir("pretrain") / "ckpt.pt", given=False)
    path = Path(spec).expanduser()
    if path.suffix == ".pt" or (path / "ckpt.pt").is_file():
        return checkpoint_base(recipe, path, given=True)
    return transformers_base(spec)


def checkpoint_base(recipe, path: Path, given: bool) -> Base:
    from contract import manifest as mf
    from tokenizer import Tokenizer
    from train.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint

    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        hint = "" if given else " (pretrain first: make pretrain; or fine-tune GPT-2: make sft INIT=gpt2)"
        raise CheckpointError(f"no base checkpoint at {path}{hint}")
    state = load_checkpoint(path)
    tok_file = recipe.tokenizer_file
    if not tok_file.is_file():
        raise FileNotFoundError(f"{tok_file}: the recipe's tokenizer is missing (make tokenizer)")
    tok = Tokenizer.load(tok_file)
    if tok.fingerprint != state["tokenizer_fingerprint"]:
        raise CheckpointError(
            f"{path}: tokenizer fingerprint mismatch: the checkpoint was trained on tokenizer "
            f"{state['tokenizer_fingerprint'][:16]}..., the recipe's tokenizer {tok_file} is {tok.fingerprint[:16]}... "
            "(retrained since?); pretrain again (make pretrain FORCE=1) or pass the matching checkpoint with INIT=")
    return Base("checkpoint", path, state["model"], dict(state["model_config"]), tok, mf.sha256_file(path),
                int(state["step"]))


def transformers_base(spec: str | Path) -> Base:
    """GPT-2 weights from a transformers directory or hub id; the chat tokens go into the padded embedding rows
    (no resize: GPT-2's 50,257 ids plus 6 fit its 50,304 rows), starting as the mean embedding."""
    from contract import manifest as mf
    from model.hf import load_hf_gpt2, resolve_hf_checkpoint, widen_embedding
    from pipelines.hf import load_directory_tokenizer
    from tokenizer.chat import with_chat_tokens

    folder = resolve_hf_checkpoint(spec)
    directory = folder if folder.is_dir() else folder.parent
    model = load_hf_gpt2(folder)
    tok = with_chat_tokens(load_directory_tokenizer(directory))
    config = model.config.to_dict()
    rows = model.config.padded_vocab_size
    if tok.n_vocab > rows:
        raise ValueError(f"{spec}: {tok.n_vocab} ids with the chat tokens do not fit the model's {rows} embedding rows")
    weights = model.state_dict()
    weights["transformer.wte.weight"] = widen_embedding(weights["transformer.wte.weight"], config["vocab_size"],
                                                        max(tok.n_vocab, config["vocab_size"]), rows)
    config["vocab_size"] = max(tok.n_vocab, config["vocab_size"])
    files = [folder] if folder.is_file() else sorted(p for p in directory.iterdir()
                                                     if p.suffix in (".safetensors", ".bin"))
    digest = mf.fingerprint([mf.sha256_file(p) for p in files])
    return Base("transformers", folder, weights, config, tok, digest, None)


# ------------------------------------------------------------------------------------ the conversations
def held_out(ids: list[str], sft) -> set[int]:
    """Indices of the held-out conversations: the val_conversations smallest id hashes (or a fraction)."""
    from pipelines.shards import id_hash  # the same hash that picks the val documents of the shards

    hashes = [id_hash(i) for i in ids]
    if sft.val_fraction:
        limit = int(sft.val_fraction * 2**64)
        return {k for k, h in enumerate(hashes) if h < limit}
    order = sorted(range(len(ids)), key=lambda k: (hashes[k], ids[k]))
    return set(order[:sft.val_conversations])


def build_conversations(sft, chat, row_tokens: int, workers: int | None, log=print):
    """Read, check, render and cut every conversation -> (train, val ConversationArrays, report)."""
    import numpy as np

    from pipelines.sources.conversations import iter_records
    from tokenizer.chat import ConversationError, check_conversation
    from train.sft_data import ConversationArrays, fit_to_context

    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    # numpy arrays, not lists of ints: a hub dataset of 10^8 tokens must fit in memory comfortably
    dtype = np.uint16 if chat.tok.n_vocab <= 1 << 16 else np.uint32
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    ids: list[str] = []
    pending: list[tuple[str, str, list[dict[str, str]]]] = []  # (id, where, messages) waiting to be encoded

    def note(reason: str, where: str, detail: str) -> None:
        counts[reason] += 1
        if len(examples.setdefault(reason, [])) < EXAMPLES_KEPT:
            examples[reason].append(f"{where}: {detail}")

    def flush() -> None:
        contents = [m["content"] for _, _, msgs in pending for m in msgs]
        encoded = chat.tok.encode_batch(contents, workers, disallowed_special=())  # user text stays text
        k = 0
        for rid, where, msgs in pending:
            rendered = chat.render_encoded(msgs, encoded[k:k + len(msgs)])
            k += len(msgs)
            fitted = fit_to_context(rendered.ids, rendered.mask, rendered.reply_ends, row_tokens)
            if fitted is None:
                note("too_long", where, f"{len(rendered.ids)} tokens, and its first reply ends after {row_tokens}")
                continue
            if len(fitted[0]) < len(rendered.ids):
                note("cut_to_context", where, f"{len(rendered.ids)} -> {len(fitted[0])} tokens (whole turns kept)")
            kept.append((np.asarray(fitted[0], dtype=dtype), np.asarray(fitted[1], dtype=np.uint8)))
            ids.append(rid)
        pending.clear()

    read = 0
    for record in iter_records(sft):
        if sft.max_conversations and read >= sft.max_conversations:
            break
        read += 1
        try:
            msgs = check_conversation(record.messages)
        except ConversationError as exc:
            note(exc.reason, record.where, str(exc))
            continue
        pending.append((record.id, record.where, msgs))
        if len(pending) >= ENCODE_CHUNK:
            flush()
    flush()
    if not kept:
        raise ValueError(f"no usable conversation among the {read:,} read from the [sft] source "
                         f"({dict(counts) or 'none read'})")
    val_idx = held_out(ids, sft)
    if len(val_idx) in (0, len(kept)):
        raise ValueError(f"{len(kept):,} conversations cannot be split into train and held-out sets "
                         f"({len(val_idx)} held out): lower [sft] val_conversations or add conversations")
    train = ConversationArrays.from_arrays([c for k, c in enumerate(kept) if k not in val_idx])
    val = ConversationArrays.from_arrays([c for k, c in enumerate(kept) if k in val_idx])
    skipped = {r: n for r, n in counts.items() if r != "cut_to_context"}
    report = {"read": read, "kept": len(kept), "train": len(train), "held_out": len(val),
              "skipped": dict(sorted(skipped.items())), "cut_to_context": counts["cut_to_context"],
              "examples": examples, "train_tokens": int(train.offsets[-1]), "held_out_tokens": int(val.offsets[-1]),
              "train_assistant_tokens": train.learned_tokens, "held_out_assistant_tokens": val.learned_tokens}
    log(f"sft data: {read:,} conversations read, {len(kept):,} kept ({len(train):,} train, {len(val):,} held out); "
        f"skipped {sum(skipped.values()):,} {dict(sorted(skipped.items())) or ''}; "
        f"{counts['cut_to_context']:,} cut to the context".replace(" {}", ""))
    return train, val, report


def prepare_data(recipe, sft, chat, row_tokens: int, data_dir: Path, log=print):
    """The rendered conversations, rebuilt only when their inputs changed (a manifest, written last)."""
    from contract import manifest as mf
    from pipelines.sources.conversations import input_fingerprint
    from train.sft_data import ConversationArrays

    config = {**sft.data_config(), "row_tokens": row_tokens}
    inputs = {"tokenizer_fingerprint": chat.tok.fingerprint, "source": input_fingerprint(sft)}
    fresh = mf.is_up_to_date(data_dir, config, inputs)
    if fresh:
        log(f"sft data: {data_dir} is up to date")
        return (ConversationArrays.load(data_dir / "train.npz"), ConversationArrays.load(data_dir / "val.npz"),
                mf.read_manifest(data_dir)["report"])
    if getattr(fresh, "changed", False) or getattr(fresh, "damaged", False):
        log(f"sft data: {fresh.reason}: rebuilding")
    data_dir.mkdir(parents=True, exist_ok=True)
    mf.remove_manifest(data_dir)
    t0 = time.perf_counter()
    train, val, report = build_conversations(sft, chat, row_tokens, sft.workers or None, log)
    train.save(data_dir / "train.npz")
    val.save(data_dir / "val.npz")
    report["seconds"] = round(time.perf_counter() - t0, 2)
    outputs = [mf.output_entry(data_dir / n, data_dir) for n in ("train.npz", "val.npz")]
    mf.write_manifest(data_dir, {"stage": "sft-data", "recipe": recipe.name, "config": config, "inputs": inputs,
                                 "report": report, "outputs": outputs})
    return train, val, report


# ------------------------------------------------------------------------------------ evaluation samples
def answer_sampler(chat, questions: list[str], max_tokens: int, temperature: float, seed: int):
    """sampler(model, device, autocast) -> ["Q: ... A: ...", ...]: the trainer logs these at every evaluation.
    Greedy by default, so the answers of two steps differ only because the model did."""
    import torch

    from model.chat_session import generate_stream

    def sample(model, device, autocast) -> list[str]:
        gen = torch.Generator().manual_seed(seed)  # its own generator: the training RNG is untouched
        out = []
        for q in questions:
            prompt = chat.render_prompt([{"role": "user", "content": q}])
            reply = list(generate_stream(model, prompt, max_new_tokens=max_tokens, temperature=temperature,
                                         top_k=50, stop_ids=chat.stop_ids, generator=gen, autocast=autocast))
            out.append(f"Q: {q} A: {chat.decode_reply(reply)}")
        return out

    return sample


# ------------------------------------------------------------------------------------ the stage
def run_identity(cfg, sft, base: Base, data_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, inputs) of a fine-tuning run as its manifest records them; equal ones give the same model."""
    from contract import manifest as mf
    from train.run_dir import NOT_IDENTITY_KEYS

    # train.init_from does not apply: the base is the one named by inputs.base_sha256
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in (*NOT_IDENTITY_KEYS, "init_from")}
    sft_keys = {k: v for k, v in dataclasses.asdict(sft).items() if k not in SFT_NOT_IDENTITY}
    inputs = {"base_sha256": base.sha256, "tokenizer_fingerprint": base.tokenizer.fingerprint,
              "data_manifest_sha256": mf.manifest_fingerprint(data_dir)}
    return {"sft": sft_keys, "train": train, "model": base.model_config}, inputs


def decide(out_dir: Path, identity, *, resume: bool, force: bool):
    from contract import manifest as mf
    from train.checkpoint import CHECKPOINT_NAME
    from train.run_dir import RUN_FILES, Decision

    if resume and force:
        return Decision("refuse", "RESUME=1 continues the run and FORCE=1 replaces it: choose one")
    if resume:
        return Decision("resume")
    if not any((out_dir / name).exists() for name in RUN_FILES):
        return Decision("train")
    if force:
        return Decision("replace")
    record = mf.read_manifest(out_dir)
    fresh = mf.is_up_to_date(out_dir, *identity) if record is not None else None
    if fresh:
        held = record.get("held_out_loss", {})
        losses = " -> ".join(f"{v:.4f}" for v in (held.get("base"), held.get("fine_tuned")) if isinstance(v, float))
        return Decision("skip", f"sft: {out_dir} is up to date (held-out loss {losses}; FORCE=1 to redo)")
    what = "an unfinished fine-tuning run" if record is None else f"a finished run, but {fresh.reason}"
    resume_hint = "RESUME=1 (--resume) to continue it, " if (out_dir / CHECKPOINT_NAME).is_file() else ""
    return Decision("refuse", f"{out_dir} holds {what}: run again with {resume_hint}FORCE=1 (--force) to start "
                              "over, replacing it, or fine-tune into another directory: "
                              f"SET=\"sft.out_dir={out_dir}-2\"")


def held_out_losses(metrics_path: Path) -> tuple[float | None, float | None]:
    """(before, after): the held-out loss at step 0 (the base model) and at the last evaluation."""
    import json

    vals = []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("type") == "val":
            vals.append((rec["step"], rec["val_loss"]))
    before = next((v for s, v in vals if s == 0), None)
    return before, (vals[-1][1] if vals else None)


def save_chat_tokenizer(tok, out_dir: Path) -> None:
    """The tokenizer the fine-tuned model speaks, beside it: ours, and HF's files with the chat template."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(out_dir / TOKENIZER_NAME)
    tmp = out_dir / "hf.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_hf(tmp)
    shutil.rmtree(out_dir / "hf", ignore_errors=True)
    tmp.rename(out_dir / "hf")


def data_dir_for(out_dir: Path) -> Path:
    """Beside the run directory, not in it: FORCE=1 moves the whole run aside, the data need not go."""
    return out_dir.with_name(out_dir.name + DATA_SUFFIX)


def run_stage(recipe, *, init: str | None = None, resume: bool = False, force: bool = False,
              stop_at_step: int | None = None, log=print) -> dict[str, Any] | None:
    """The whole stage; returns the manifest of the finished run (None when stopped early or not rank 0)."""
    from contract.stage_lock import stage_lock
    from tokenizer.chat import ChatFormat
    from train import distributed, run_dir
    from train.config import pretrain_config_from_recipe
    from train.sft_config import sft_section_from_recipe

    sft = sft_section_from_recipe(recipe)
    base_cfg = pretrain_config_from_recipe(recipe)
    out_dir = Path(sft.out_dir) if sft.out_dir else recipe.stage_dir("sft")
    env = distributed.setup(base_cfg.train.device)
    lock = stage_lock(out_dir, stage="sft") if env.is_main else contextlib.nullcontext()
    try:
        base = resolve_base(recipe, sft, init)
        chat = ChatFormat(base.tokenizer)  # refuses a tokenizer without the chat tokens, saying how to add them
        row_tokens = int(base.model_config["block_size"]) + 1
        data_dir = data_dir_for(out_dir)
        with lock:
            if env.is_main:
                for path in run_dir.remove_leftovers(out_dir):
                    log(f"sft: removed {path}, left by an interrupted write")
                note = run_dir.recover_replaced_run(out_dir)
                if note:
                    log(f"sft: {note}")
                prepared = prepare_data(recipe, sft, chat, row_tokens, data_dir, log)
            distributed.barrier(env)
            if not env.is_main:  # the other ranks read what rank 0 prepared
                prepared = prepare_data(recipe, sft, chat, row_tokens, data_dir, lambda *a: None)
            return _train(recipe, sft, base, chat, prepared, out_dir, env, resume, force, stop_at_step, log)
    finally:
        distributed.teardown(env)


def _train(recipe, sft, base, chat, prepared, out_dir, env, resume, force, stop_at_step, log):
    from contract import manifest as mf
    from train import distributed, run_dir
    from train.sft_config import sft_train_config
    from train.sft_data import ConversationData
    from train.trainer import Trainer

    train_arrays, val_arrays, report = prepared
    seq_len = int(base.model_config["block_size"])
    data = ConversationData(train_arrays, val_arrays, base.tokenizer, pad_id=chat.bos,
                            checkpoint_extra={"base": base.record()}, source=f"conversations ({sft.source})")
    val_rows = data.windows("val", seq_len).num_windows
    train_rows = data.windows("train", seq_len).num_windows
    cfg = sft_train_config(recipe, sft, base.model_config, val_tokens=val_rows * seq_len,
                           one_epoch_steps=lambda t: math.ceil(train_rows * seq_len / t.total_batch_tokens))
    cfg = dataclasses.replace(cfg, out_dir=out_dir)
    data.sampler = answer_sampler(chat, list(sft.questions), sft.answer_tokens, sft.temperature, cfg.train.seed)
    identity = run_identity(cfg, sft, base, data_dir_for(out_dir))
    decision = decide(out_dir, identity, resume=resume, force=force) if env.is_main else None
    decision = distributed.broadcast_object(decision, env)
    if decision.action == "refuse":
        if not env.is_main:
            raise SystemExit(2)
        raise run_dir.RunExistsError(decision.message)
    if decision.action == "skip":
        if env.is_main:
            log(decision.message)
        return mf.read_manifest(out_dir) if env.is_main else None
    if env.is_main:
        log(f"sft: base {base.kind} {base.path} (step {base.step}, sha256 {base.sha256[:12]}...), "
            f"tokenizer {base.tokenizer.fingerprint[:16]}...")
    trainer = Trainer(cfg, resume=decision.action == "resume", stop_at_step=stop_at_step, data=data,
                      init_weights=base.weights)
    replacement = None
    try:
        if env.is_main and decision.action == "replace":
            replacement = run_dir.Replacement(out_dir)
            trainer.on_checkpoint = lambda step: replacement.commit()
        elif env.is_main:
            mf.remove_manifest(out_dir)
        if env.is_main:
            save_chat_tokenizer(base.tokenizer, out_dir)
        result = trainer.run()
    except BaseException:
        trainer.close()
        if replacement is not None:
            replacement.abandon()
        raise
    trainer.close()
    if not env.is_main or result.steps_done < trainer.plan.max_steps:
        return None
    before, after = held_out_losses(out_dir / "metrics.jsonl")
    outputs = [mf.output_entry(out_dir / n, out_dir) for n in
               ("ckpt.pt", "metrics.jsonl", "loss.png", "summary.json", TOKENIZER_NAME, "hf/tokenizer.json",
                "hf/tokenizer_config.json") if (out_dir / n).is_file()]
    config, inputs = identity
    manifest = {"stage": "sft", "recipe": recipe.name, "config": config, "inputs": inputs, "base": base.record(),
                "tokenizer": {"fingerprint": base.tokenizer.fingerprint, "file": TOKENIZER_NAME},
                "data": {k: v for k, v in report.items() if k != "examples"}, "step": result.steps_done,
                "held_out_loss": {"base": before, "fine_tuned": after}, "outputs": outputs}
    mf.write_manifest(out_dir, manifest)
    if before is not None and after is not None:
        log(f"sft: held-out loss on assistant tokens {before:.4f} (base model) -> {after:.4f} (fine-tuned), "
            f"{val_arrays.learned_tokens:,} tokens of {len(val_arrays):,} held-out conversations; "
            f"chat with it: make chat")
    return manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.sft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.toml", help="recipe TOML (default: %(default)s)")
    parser.add_argument("--init", default=None, help="base model: a ckpt.pt (or its directory) or a transformers "
                                                     "GPT-2 directory (default: [sft] init, else the recipe's "
                                                     "pretraining checkpoint)")
    parser.add_argument("--resume", action="store_true", help="continue the fine-tuning run in the output directory")
    parser.add_argument("--force", action="store_true", help="start over even though a run is there")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set sft.max_steps=50 (repeatable)")
    parser.add_argument("--stop-at-step", type=int, default=None,
                        help="checkpoint and exit after this step, as if interrupted (resume with --resume)")
    add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from contract.recipe import load_recipe, parse_overrides

        run_stage(load_recipe(args.config, parse_overrides(args.set)), init=args.init, resume=args.resume,
                  force=args.force, stop_at_step=args.stop_at_step)

    from train.trainer import PRETRAIN_ERRORS  # CheckpointError, SourceError, ConversationError: ValueErrors

    return run_reported(body, PRETRAIN_ERRORS, debug=args.debug,
                        interrupt_hint="the last checkpoint is kept; continue with RESUME=1 (--resume)")


if __name__ == "__main__":
    sys.exit(main())
