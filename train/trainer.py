"""The pretraining loop: shards in, checkpoints, metrics and samples out.

One optimizer step = `grad_accum_steps` micro-steps of (B, T) tokens in each of `world_size` processes:

    for each micro-step:  loss = model(x, y) / grad_accum_steps;  loss.backward()
    (DDP all-reduces the gradients only on the last micro-step; the others run under no_sync())
    clip the global gradient norm; set the scheduled lr; AdamW step

Dividing by grad_accum_steps makes the accumulated gradient the gradient of the *mean* loss over the
whole batch (backward sums into .grad), and DDP averages over processes, so the update is the same for
1 GPU x 8 micro-steps and 8 GPUs x 1 micro-step. Skipping the all-reduce on the first micro-steps saves
(grad_accum_steps - 1) gradient-sized transfers per step.

Everything that can be wrong with the inputs (shards, tokenizer, checkpoint, config) is checked in
`Trainer.__init__`, before the first step, so a mistake costs seconds rather than a GPU-night.

Read first: `Trainer.train_step` (the step above, in code; the schedule is train/optim.py `lr_at`), then
`Trainer.run` (the loop: step, log, evaluate, checkpoint). Bookkeeping a first reading may skip (marked
`# bookkeeping:`): the checks and resume in `Trainer.__init__`, checkpoints (`Trainer.save`), logging, ETA
and MFU.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.shard_format import ShardReader
from model import GPT, GPTConfig
from tokenizer.atomic_write import write_json_atomic
from train import distributed
from train.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    check_resume_compatible,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from train.config import BatchPlan, BatchWarmup, PretrainConfig, batch_plan
from train.init_from import SCRATCH, initial_weights
from train.loader import ShuffledLoader, TokenWindows, VerifiedShards, eval_window_ids
from train.logger import RunLogger, WandbLoginError, check_wandb_login, format_duration, format_train_line
from train.optim import lr_at, make_optimizer, set_lr
from train.run_dir import RunExistsError
from train.val_loss import window_loss

# Dense bf16 peak of common accelerators (TFLOP/s), the denominator of MFU.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0}


class TrainingDivergedError(RuntimeError):
    """The loss stopped being a number: nothing after the last checkpoint is worth keeping."""


def peak_flops(device: str, override_tflops: float) -> float | None:
    if override_tflops > 0:
        return override_tflops * 1e12
    if not device.startswith("cuda"):
        return None  # no meaningful peak for a CPU; MFU is reported as n/a
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def unigram_entropy(arrays: list[np.ndarray], vocab_size: int, max_tokens: int = 200_000_000) -> float:
    """Entropy (nats/token) of the token frequencies: the loss of the best model that ignores context.

    A model that learned nothing but which tokens are common reaches this; anything lower needs context.
    Counted over at most `max_tokens` (enough for a stable estimate on big runs).
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    left = max_tokens
    for a in arrays:
        part = a[:left]
        counts += np.bincount(part, minlength=vocab_size)[:vocab_size]
        left -= len(part)
        if left <= 0:
            break
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@dataclass
class RunResult:
    out_dir: Path
    checkpoint: Path
    steps_done: int
    losses: list[float]  # train loss of each step this invocation ran
    val_loss: float | None
    unigram_entropy: float
    samples: list[str]
    hellaswag: dict[str, float] | None


def resolve_model_config(cfg: PretrainConfig, shards_vocab: int) -> GPTConfig:
    """Preset + overrides; the vocabulary follows the shards unless the recipe sets a (larger) one."""
    overrides = cfg.model.overrides()
    vocab = overrides.pop("vocab_size", shards_vocab)
    if vocab < shards_vocab:
        raise ValueError(
            f"{cfg.recipe_path}: model.vocab_size = {vocab} is smaller than the vocabulary of the shards in "
            f"{cfg.shards_dir} ({shards_vocab} ids): token ids >= {vocab} would index past the embedding")
    return GPTConfig.from_preset(cfg.model.preset, vocab_size=vocab, **overrides)


class ShardData:
    """What the trainer reads for pretraining: a recipe's token shards, through their manifest.

    The trainer asks its data for the vocabulary and tokenizer fingerprint (checked against the model and a
    resumed checkpoint), for train and val rows of T+1 tokens (loader.Windows), for the tokenizer and for
    a line about itself. Fine-tuning hands the trainer another object with the same members
    (train/sft_data.ConversationData: packed conversations whose non-assistant targets are -1), and with
    `sampler` set, so the loop, checkpoints, logging and evaluation are the same code for both.
    """

    sampler = None  # None: samples continue eval.prompts (Trainer.samples)

    def __init__(self, shards_dir: Path):
        self.reader = ShardReader(shards_dir)
        for split in ("train", "val"):
            if split not in self.reader.splits:
                raise ValueError(f"{shards_dir}: the shards have no {split!r} split (splits: {self.reader.splits})")
        self.vocab_size = self.reader.vocab_size
        self.tokenizer_fingerprint = self.reader.tokenizer_fingerprint
        self.train_tokens = self.reader.num_tokens("train")
        self.checkpoint_extra = {"shards_dir": str(shards_dir)}
        # Every shard is hashed and its ids range-checked once, when first read (train/loader.py: VerifiedShards).
        self.shards = VerifiedShards(self.reader, self.reader.vocab_size)

    def windows(self, split: str, seq_len: int) -> TokenWindows:
        return TokenWindows(self.shards.token_arrays(split), seq_len, split)

    def load_tokenizer(self, required: bool):
        return self.reader.load_tokenizer(required=required)

    def unigram_entropy(self) -> float:
        return unigram_entropy(self.shards.token_arrays("train"), self.vocab_size)

    def describe(self, train: TokenWindows, seq_len: int) -> str:
        return (f"{self.train_tokens:,} train tokens ({train.num_windows:,} windows of {seq_len + 1}), "
                f"{self.reader.num_tokens('val'):,} val tokens")


class Trainer:
    def __init__(self, cfg: PretrainConfig, *, resume: bool = False, stop_at_step: int | None = None,
                 log: bool = True, evaluate: bool = True, save_checkpoints: bool = True, data: Any = None,
                 init_weights: dict[str, torch.Tensor] | None = None):
        """data: what to train on (default: the recipe's shards, ShardData). init_weights: a state dict to
        start from instead of the random init (fine-tuning; otherwise train.init_from says); ignored when resuming,
        which loads the checkpoint."""
        self.cfg = cfg
        self.stop_at_step = stop_at_step
        self.evaluate_enabled, self.save_enabled = evaluate, save_checkpoints  # off: pure throughput runs
        t = cfg.train
        self.say = print if log else (lambda *a, **k: None)
        self.env = distributed.setup(t.device)
        self.main = self.env.is_main
        if not self.main:
            self.say = lambda *a, **k: None

        # --- data: the manifest is the contract; everything below is checked against it ---
        self.data = data if data is not None else ShardData(cfg.shards_dir)
        self.model_config = resolve_model_config(cfg, self.data.vocab_size)
        self.seq_len = t.seq_len or self.model_config.block_size
        if self.seq_len > self.model_config.block_size:
            raise ValueError(f"{cfg.recipe_path}: train.seq_len = {self.seq_len} exceeds the model's block_size "
                             f"{self.model_config.block_size}")
        self.plan: BatchPlan = batch_plan(t, self.seq_len, self.env.world_size, cfg.recipe_path)
        self.batch_warmup = BatchWarmup.from_plan(t, self.plan)
        if self.main:
            check_wandb_login(cfg.wandb)  # before the shards are hashed, and without the network
        self.loader = ShuffledLoader(None, "train", t.micro_batch_size, self.seq_len, seed=t.seed,
                                     rank=self.env.rank, world_size=self.env.world_size,
                                     windows=self.data.windows("train", self.seq_len))
        self.val_windows = self.data.windows("val", self.seq_len)

        # --- bookkeeping: resume; refuse other data / another architecture before building anything ---
        self.checkpoint_path = cfg.out_dir / CHECKPOINT_NAME
        self.state: dict[str, Any] | None = None
        if resume:
            self.state = load_checkpoint(self.checkpoint_path)
            check_resume_compatible(self.state, model_config=self.model_config.to_dict(),
                                    tokenizer_fingerprint=self.data.tokenizer_fingerprint,
                                    source=self.checkpoint_path)
            self.loader.load_state_dict(self.state["loader"])

        # --- text side: tokenizer for samples, HellaSwag examples ---
        e = cfg.eval
        self.tokenizer = self.data.load_tokenizer(required=bool(e.hellaswag))  # HellaSwag encodes text
        self.hellaswag = None
        if e.hellaswag:
            from train.hellaswag import load_examples

            self.hellaswag = load_examples(e.hellaswag, e.hellaswag_limit)

        # --- device, precision, model, optimizer ---
        self.device = self.env.device
        dev_type = self.env.device_type
        self._threads_before = torch.get_num_threads()  # restored by close(): the setting is process-global
        if dev_type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul left outside autocast
        elif t.cpu_threads:
            torch.set_num_threads(t.cpu_threads)
        use_bf16 = t.dtype == "bfloat16" or (t.dtype == "auto" and dev_type == "cuda")
        self.autocast = (lambda: torch.autocast(device_type=dev_type, dtype=torch.bfloat16)) if use_bf16 \
            else contextlib.nullcontext
        self.precision = "bfloat16 autocast" if use_bf16 else "float32"

        # --- starting weights: train.init_from (a checkpoint of ours, GPT-2, ...), unless resuming ---
        self.init_note: str | None = None
        if init_weights is None and self.state is None and t.init_from != SCRATCH:
            init = initial_weights(t.init_from, self.model_config, self.data.tokenizer_fingerprint,
                                   lambda: self.data.load_tokenizer(required=True))
            init_weights, self.init_note = init.weights, init.describe()

        torch.manual_seed(t.seed)  # same initial weights in every process (DDP also broadcasts rank 0's)
        self.raw_model = GPT(self.model_config).to(self.device)
        if init_weights is not None and self.state is None:
            self.raw_model.load_state_dict(init_weights)  # fine-tuning's base model, or train.init_from's
        self.optimizer = make_optimizer(self.raw_model, t, dev_type)
        self.start_step = 0
        if self.state is not None:
            self.raw_model.load_state_dict(self.state["model"])
            self.optimizer.load_state_dict(self.state["optimizer"])
            self.start_step = int(self.state["step"])
            rng = self.state.get("rng") or []
            if len(rng) == self.env.world_size:
                restore_rng(rng[self.env.rank])
        self.model = self.raw_model
        self.compiled, self.compile_note = self._maybe_compile(t.compile, dev_type)
        if self.compiled:
            self.model = torch.compile(self.raw_model)
        if self.env.is_distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.model, device_ids=[self.env.local_rank] if dev_type == "cuda" else None)
        self.eval_model = self.model.module if self.env.is_distributed else self.model

        self.flops_per_token = self.raw_model.flops_per_token(self.seq_len)
        self.peak = peak_flops(self.device, t.peak_tflops)
        self.entropy = self.data.unigram_entropy()
        # The logger is opened by run(), not here: constructing a Trainer (every check above) writes
        # nothing, so the stage can still refuse or move the previous run aside after it (train/run_dir.py).
        self.logger: RunLogger | None = None
        self.resume = resume
        self.last_checkpoint_step: int | None = self.start_step if self.state is not None else None
        self.on_checkpoint = None  # called by rank 0 after each checkpoint is on disk (FORCE=1 commits there)

    def _open_logger(self) -> None:
        if self.main and self.start_step < self.plan.max_steps:  # a finished run's logs stay untouched
            self.logger = RunLogger(self.cfg.out_dir, wandb_cfg=self.cfg.wandb, run_config=self.run_config(),
                                    resume_step=self.start_step if self.resume else None,
                                    run_name=self.cfg.recipe_name, unigram_entropy=self.entropy)

    @staticmethod
    def _maybe_compile(setting: str, dev_type: str) -> tuple[bool, str]:
        if setting == "false":
            return False, "torch.compile off (train.compile = false)"
        if setting == "auto" and dev_type != "cuda":
            return False, ("torch.compile off: the device is a CPU, where compiling costs more time than a short "
                           "run saves (set train.compile = true to force it)")
        if dev_type == "cuda":
            try:
                from torch.utils._triton import has_triton
            except ImportError:  # pragma: no cover - very old torch
                has_triton = None
            if has_triton is not None and not has_triton():
                if setting == "true":
                    raise RuntimeError("train.compile = true but Triton is not installed (inductor needs it on GPUs)")
                return False, "torch.compile off: Triton is not installed (pip install triton)"
        from torch._dynamo import is_dynamo_supported

        if not is_dynamo_supported():  # e.g. a Python version newer than this torch release supports
            why = f"TorchDynamo does not support Python {sys.version.split()[0]} in this torch"
            if setting == "true":
                raise RuntimeError(f"train.compile = true but {why}")
            return False, f"torch.compile off: {why}"
        return True, "torch.compile on (first steps include compilation)"

    def run_config(self) -> dict[str, Any]:
        return {**self.cfg.to_dict(), "model_config": self.model_config.to_dict(),
                "plan": {"grad_accum_steps": self.plan.grad_accum_steps, "world_size": self.plan.world_size,
                         "max_steps": self.plan.max_steps, "seq_len": self.seq_len},
                "tokenizer_fingerprint": self.data.tokenizer_fingerprint}

    # ------------------------------------------------------------------ evaluation
    def val_loss(self) -> float:
        """Mean loss over the same first windows of the val split every time (split across ranks)."""
        ids = eval_window_ids(self.val_windows.num_windows, self.cfg.eval.val_tokens, self.seq_len,
                              self.env.rank, self.env.world_size)
        total = window_loss(self.eval_model, self.val_windows, ids, self.cfg.train.micro_batch_size, self.device,
                            self.autocast)
        distributed.all_reduce_sum(total, self.env)
        return float(total[0] / total[1])

    @torch.no_grad()
    def samples(self) -> list[str]:
        """Continuations of the fixed prompts from a fixed seed, so samples compare across steps."""
        if self.data.sampler is not None:  # fine-tuning: answers to fixed questions
            return self.data.sampler(self.raw_model, self.device, self.autocast)
        e = self.cfg.eval
        if self.tokenizer is None or e.samples_per_prompt == 0 or e.sample_tokens == 0:
            return []
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed)
        out = []
        for prompt in e.prompts:
            ids = self.tokenizer.encode(prompt, allowed_special="all")
            idx = torch.tensor([ids] * e.samples_per_prompt, dtype=torch.long, device=self.device)
            with self.autocast():
                seq = self.raw_model.generate(idx, e.sample_tokens, temperature=e.temperature, top_k=e.top_k or None,
                                              generator=gen)
            out += [self.tokenizer.decode(row.tolist()) for row in seq]
        return out

    def hellaswag_scores(self) -> dict[str, float]:
        from train.hellaswag import score

        # The uncompiled model: every example has its own length, and each new shape would be a recompile.
        counts = score(self.raw_model, self.hellaswag, self.tokenizer.encode, device=self.device,
                       block_size=self.model_config.block_size, autocast=self.autocast, rank=self.env.rank,
                       world_size=self.env.world_size)
        self.raw_model.train()
        counts = distributed.all_reduce_sum(counts, self.env)
        n = float(counts[0])
        return {"n": n, "acc": float(counts[1]) / n, "acc_norm": float(counts[2]) / n}

    def evaluate(self, step: int, final: bool) -> dict[str, Any]:
        e = self.cfg.eval
        result: dict[str, Any] = {}
        if step % e.every == 0 or final:
            result["val_loss"] = self.val_loss()
            if self.logger:
                self.logger.log({"type": "val", "step": step, "val_loss": result["val_loss"]},
                                f"step {step:>6} | val loss {result['val_loss']:.4f} "
                                f"(unigram entropy {self.entropy:.4f})")
        hs_every = e.every if e.hellaswag_every is None else e.hellaswag_every
        if self.hellaswag is not None and ((hs_every and step % hs_every == 0) or final):
            result["hellaswag"] = hs = self.hellaswag_scores()
            if self.logger:
                self.logger.log({"type": "hellaswag", "step": step, **hs},
                                f"step {step:>6} | HellaSwag acc_norm {hs['acc_norm']:.4f} acc {hs['acc']:.4f} "
                                f"({hs['n']:.0f} examples)")
        s_every = e.every if e.sample_every is None else e.sample_every
        if self.main and ((s_every and step % s_every == 0) or final):
            result["samples"] = texts = self.samples()
            for text in texts:
                self.logger.log({"type": "sample", "step": step, "text": text}, f"step {step:>6} | sample: {text!r}")
        if self.logger and "val_loss" in result:
            self.logger.plot()
        return result

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int, metrics: dict[str, Any]) -> None:
        rng = distributed.gather_objects(capture_rng(), self.env)  # every rank's generators, for exact resumes
        if self.main:
            save_checkpoint(self.checkpoint_path, {
                "step": step,
                "model": self.raw_model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "loader": self.loader.state_dict(),
                "rng": rng,
                "model_config": self.model_config.to_dict(),
                "config": self.cfg.to_dict(),
                "tokenizer_fingerprint": self.data.tokenizer_fingerprint,
                **self.data.checkpoint_extra,  # where the data came from: shards_dir, or the SFT base model
                "metrics": {k: float(v) for k, v in metrics.items()},
            })
            self.last_checkpoint_step = step
            if self.on_checkpoint is not None:
                self.on_checkpoint(step)
        distributed.barrier(self.env)

    # ------------------------------------------------------------------ the loop
    def banner(self) -> None:
        c, p = self.model_config, self.plan
        self.say(f"model: {self.cfg.model.preset} n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} "
                 f"block_size={c.block_size} vocab={c.vocab_size} (padded {c.padded_vocab_size}); "
                 f"{self.raw_model.num_params(non_embedding=False):,} parameters")
        self.say(f"data: {self.data.describe(self.loader.windows, self.seq_len)}; unigram entropy "
                 f"{self.entropy:.4f} nats/token (ln vocab = {math.log(c.vocab_size):.4f})")
        self.say(p.describe())
        if self.batch_warmup.active:
            self.say(self.batch_warmup.describe())
        epochs = self.batch_warmup.tokens_before(p.max_steps) / max(1, self.data.train_tokens)
        self.say(f"device: {self.device} x {self.env.world_size} process(es), {self.precision}; {self.compile_note}; "
                 f"{epochs:.2f} epoch(s) of the train split")
        if self.init_note:
            self.say(self.init_note)
        if self.start_step:
            self.say(f"resuming from {self.checkpoint_path} at step {self.start_step} "
                     f"(data stream position {self.loader.consumed:,} windows)")

    def train_step(self, step: int) -> tuple[float, float, float]:
        t, accum = self.cfg.train, self.plan.grad_accum_steps
        lr = lr_at(step, t, self.plan.max_steps)
        set_lr(self.optimizer, lr)
        loss_sum = torch.zeros((), device=self.device)
        rows = self.batch_warmup.micro_batch(step)  # B, or fewer while the batch warms up (train/config.py)
        for micro in range(accum):
            x, y = self.loader.next_batch(rows)
            if self.env.device_type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
                y = y.pin_memory().to(self.device, non_blocking=True)
            last = micro == accum - 1
            # DDP pitfall: without no_sync every micro-step would all-reduce the gradients.
            sync = contextlib.nullcontext() if (last or not self.env.is_distributed) else self.model.no_sync()
            with sync:
                with self.autocast():
                    _, loss = self.model(x, y)
                loss = loss / accum  # backward *sums* into .grad: scale so the total is the batch mean
                loss_sum += loss.detach()
                loss.backward()
        if self.env.is_distributed:
            loss_sum = distributed.all_reduce_sum(loss_sum, self.env) / self.env.world_size
        max_norm = t.grad_clip if t.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss_sum.item()), lr, float(norm.item())

    def run(self) -> RunResult:
        p = self.plan
        self.banner()
        losses: list[float] = []
        last_eval: dict[str, Any] = {}
        step = self.start_step
        if step >= p.max_steps:  # leave summary.json and metrics as the finished run wrote them
            self.say(f"nothing to do: the checkpoint is at step {step} of {p.max_steps} "
                     "(raise train.max_steps or train.token_budget to train on)")
            val = (self.state or {}).get("metrics", {}).get("val_loss")
            return RunResult(out_dir=self.cfg.out_dir, checkpoint=self.checkpoint_path, steps_done=step, losses=[],
                             val_loss=val, unigram_entropy=self.entropy, samples=[], hellaswag=None)
        self._open_logger()
        if step == 0 and p.max_steps > 0 and self.evaluate_enabled:
            last_eval = self.evaluate(0, final=False)  # the untrained baseline (~ ln vocab)
        recent: list[float] = []
        t_start = time.time()
        while step < p.max_steps:
            t0 = time.time()
            loss, lr, norm = self.train_step(step)
            if self.env.device_type == "cuda":
                torch.cuda.synchronize()
            dt = time.time() - t0
            step += 1
            losses.append(loss)
            # bookkeeping: timing, ETA, MFU and the log line; the training happened in train_step above
            recent = (recent + [dt])[-20:]
            if len(recent) > 1 and step - self.start_step <= 3:
                recent = recent[1:]  # the first step includes compilation and warmup: keep it out of the ETA
            tok_s = self.batch_warmup.step_tokens(step - 1) / dt
            mfu = self.flops_per_token * tok_s / (self.peak * self.env.world_size) if self.peak else None
            if not math.isfinite(loss):
                self._diverged(loss, step, lr)
            if self.logger:
                rec = {"type": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": norm, "dt": dt,
                       "tokens_per_sec": tok_s, "mfu": mfu, "tokens": self.batch_warmup.tokens_before(step),
                       "eta_s": (p.max_steps - step) * sum(recent) / len(recent)}
                show = step % self.cfg.train.log_every == 0 or step in (1, p.max_steps)
                self.logger.log(rec, format_train_line(rec, p.max_steps) if show else None)
            final = step == p.max_steps
            stopping = final or (self.stop_at_step is not None and step >= self.stop_at_step)
            if self.evaluate_enabled and (step % self.cfg.eval.every == 0 or final or self._other_eval_due(step)):
                last_eval = self.evaluate(step, final)
            # bookkeeping: a checkpoint, which is where a resumed run starts again
            if self.save_enabled and (step % self.cfg.train.checkpoint_every == 0 or stopping):
                metrics = {"loss": loss}
                if "val_loss" in last_eval:
                    metrics["val_loss"] = last_eval["val_loss"]
                self.save(step, metrics)
            if stopping:
                break
        return self._finish(step, losses, last_eval, time.time() - t_start)

    def _diverged(self, loss: float, step: int, lr: float):
        """Stop at the first non-finite loss, before it is logged or saved: the weights it updated are
        NaN too, and the checkpoint on disk is the last good state (every rank sees the same reduced loss,
        so all of them stop here together)."""
        kept = (f"the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.checkpoint_path}"
                if self.last_checkpoint_step is not None else "no checkpoint had been written yet")
        raise TrainingDivergedError(
            f"loss became {loss} at step {step} (lr {lr:.3g}); training stopped and {kept}; lower train.max_lr "
            f"(now {self.cfg.train.max_lr:g}), e.g. SET=\"train.max_lr={self.cfg.train.max_lr / 3:.2g}\", "
            f"and resume (RESUME=1) or start over (FORCE=1)")

    def _other_eval_due(self, step: int) -> bool:
        e = self.cfg.eval
        for every in (e.sample_every, e.hellaswag_every):
            if every and step % every == 0:
                return True
        return False

    def _finish(self, step: int, losses: list[float], last_eval: dict[str, Any], seconds: float) -> RunResult:
        val = last_eval.get("val_loss")
        hs = last_eval.get("hellaswag")
        summary = {"step": step, "max_steps": self.plan.max_steps, "tokens": self.batch_warmup.tokens_before(step),
                   "unigram_entropy": self.entropy, "val_loss": val, "seconds": seconds,
                   "final_train_loss": losses[-1] if losses else None}
        if hs:
            summary.update({f"hellaswag_{k}": v for k, v in hs.items()})
        if self.logger:
            self.logger.log({"type": "summary", **summary})
            write_json_atomic(self.cfg.out_dir / "summary.json", summary)
            self.logger.plot()
            self.logger.finish(summary)
            if val is not None:
                self.say(f"done: step {step}/{self.plan.max_steps} in {format_duration(seconds)}; val loss {val:.4f} "
                         f"vs unigram entropy {self.entropy:.4f} nats/token; checkpoint {self.checkpoint_path}; "
                         f"metrics {self.logger.metrics_path}; plot {self.logger.plot_path}")
        return RunResult(out_dir=self.cfg.out_dir, checkpoint=self.checkpoint_path, steps_done=step, losses=losses,
                         val_loss=val, unigram_entropy=self.entropy, samples=last_eval.get("samples", []),
                         hellaswag=hs)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.finish({})
        torch.set_num_threads(self._threads_before)
        distributed.teardown(self.env)


def pretrain(cfg: PretrainConfig, *, resume: bool = False, stop_at_step: int | None = None, log: bool = True,
             evaluate: bool = True, save_checkpoints: bool = True) -> RunResult:
    trainer = Trainer(cfg, resume=resume, stop_at_step=stop_at_step, log=log, evaluate=evaluate,
                      save_checkpoints=save_checkpoints)
    try:
        return trainer.run()
    finally:
        trainer.close()


# What a pretraining command reports in one `error:` line (pipelines/stage_cli.run_reported): bad recipes,
# shards, checkpoints, devices or credentials, a refused run directory, a diverged loss. The ValueErrors
# are the config checks of the trainer and the model (batch arithmetic, presets, vocabulary).
PRETRAIN_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, distributed.DeviceUnavailableError, WandbLoginError, TrainingDivergedError, RunExistsError)

__all__ = ["Trainer", "RunResult", "pretrain", "resolve_model_config", "unigram_entropy",
           "peak_flops", "PRETRAIN_ERRORS", "TrainingDivergedError"]
