"""The pretraining stage's part of a recipe: the [model], [train], [eval] and [wandb] sections.

The dataclasses below are the schemas of these sections. They are validated the way every recipe section
is, by contract.recipe.parse_section (unknown key, wrong type, value outside CHOICES or failing `check` ->
RecipeError naming the key and the recipe file), so the trainer never reads a raw dict and a typo fails
before any work.

Values that depend on the data (the vocabulary size, the number of steps a token budget buys) are
resolved later by the trainer, which has the shards open; the arithmetic lives in `batch_plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from contract.recipe import Recipe, parse_section

Fail = Callable[[str], NoReturn]

DEFAULT_PROMPTS = ("I am a doctor, let me teach you about",)
WANDB_MODES = ("disabled", "offline", "online")


@dataclass(frozen=True)
class ModelSection:
    """Which GPT to build: a preset from model.PRESETS plus optional overrides of its fields."""

    preset: str = "gpt2"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float | None = None
    bias: bool | None = None
    # None = the shards' vocabulary (what the tokenizer produced). Setting it larger is allowed
    # (e.g. 50304 for a GPU-friendly size); smaller than the shards' is an error.
    vocab_size: int | None = None

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "preset" and v is not None}


@dataclass(frozen=True)
class TrainSection:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"device": ("auto", "cpu", "cuda"),
                                                      "dtype": ("auto", "bfloat16", "float32"),
                                                      "compile": ("auto", "true", "false")}
    micro_batch_size: int = 64  # B: sequences per forward pass per process
    seq_len: int | None = None  # T: tokens per sequence; None = the model's block_size
    total_batch_tokens: int = 524_288  # tokens per optimizer step over all processes and micro-steps (2**19)
    token_budget: int = 10_000_000_000  # max_steps = token_budget // total_batch_tokens ...
    max_steps: int | None = None  # ... unless given explicitly
    # GPT-3's batch-size warm-up: 0 = off. N > 0: the batch grows linearly from 1/B of total_batch_tokens to all
    # of it over the first N tokens, by taking fewer windows per micro-step (see BatchWarmup).
    batch_warmup_tokens: int = 0
    max_lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_steps: int = 715
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 = no clipping (the norm is still measured and logged)
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bfloat16 autocast on CUDA, float32 on CPU) | bfloat16 | float32
    compile: str = "auto"  # auto (on for CUDA, off elsewhere) | true | false
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end
    log_every: int = 1  # console line every N steps (metrics.jsonl gets every step)
    cpu_threads: int = 0  # torch.set_num_threads on CPU; 0 = torch's default
    peak_tflops: float = 0.0  # accelerator peak for MFU; 0 = look the device up (H100 bf16 = 989)
    out_dir: str = ""  # "" = artifacts/<recipe>/pretrain
    # The starting weights (train/init_from.py): "scratch" (random), a checkpoint of ours (ckpt.pt or its
    # directory), or GPT-2: "gpt2", "gpt2-medium", ..., a hub id, or a local transformers directory.
    init_from: str = "scratch"

    def check(self, fail: Fail) -> None:
        if not self.init_from.strip():
            fail("train.init_from must be \"scratch\", a checkpoint path, or a model such as \"gpt2\"")
        for key in ("micro_batch_size", "total_batch_tokens", "token_budget", "checkpoint_every", "log_every"):
            if getattr(self, key) <= 0:
                fail(f"train.{key} must be > 0, got {getattr(self, key)}")
        if self.seq_len is not None and self.seq_len <= 0:
            fail(f"train.seq_len must be > 0, got {self.seq_len}")
        if self.max_steps is not None and self.max_steps <= 0:
            fail(f"train.max_steps must be > 0, got {self.max_steps}")
        if self.warmup_steps < 0:
            fail(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.batch_warmup_tokens < 0:
            fail(f"train.batch_warmup_tokens must be >= 0, got {self.batch_warmup_tokens}")
        if not 0 <= self.min_lr <= self.max_lr:
            fail(f"need 0 <= train.min_lr <= train.max_lr, got {self.min_lr}, {self.max_lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            fail("train.beta1 and train.beta2 must be in [0, 1)")
        if not (self.eps > 0 and self.weight_decay >= 0 and self.grad_clip >= 0):
            fail("train.eps must be > 0, train.weight_decay and train.grad_clip >= 0")
        if self.cpu_threads < 0 or self.peak_tflops < 0:
            fail("train.cpu_threads and train.peak_tflops must be >= 0")


@dataclass(frozen=True)
class EvalSection:
    every: int = 250  # steps between validation-loss measurements (also at step 0 and at the end)
    val_tokens: int = 10_485_760  # tokens of the val split per measurement (rounded to whole windows)
    sample_every: int | None = None  # None = same as `every`; 0 = never during training
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    sample_tokens: int = 32
    samples_per_prompt: int = 2
    temperature: float = 1.0
    top_k: int = 50
    hellaswag: str = ""  # path of a HellaSwag jsonl (official schema); "" = skip
    hellaswag_every: int | None = None  # None = same as `every`
    hellaswag_limit: int = 0  # score only the first N examples; 0 = all

    def check(self, fail: Fail) -> None:
        if self.every <= 0:
            fail(f"eval.every must be > 0, got {self.every}")
        if self.val_tokens <= 0:
            fail(f"eval.val_tokens must be > 0, got {self.val_tokens}")
        for key in ("sample_every", "hellaswag_every"):
            v = getattr(self, key)
            if v is not None and v < 0:
                fail(f"eval.{key} must be >= 0, got {v}")
        if min(self.sample_tokens, self.samples_per_prompt, self.top_k, self.hellaswag_limit) < 0:
            fail("eval.sample_tokens, eval.samples_per_prompt, eval.top_k, eval.hellaswag_limit must be >= 0")
        if self.temperature <= 0:
            fail(f"eval.temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class WandbSection:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"mode": WANDB_MODES}
    mode: str = "disabled"  # disabled | offline (writes a local run you can `wandb sync` later) | online
    project: str = "llm-journey"
    entity: str = ""
    run_name: str = ""  # "" = the recipe name
    group: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class PretrainConfig:
    recipe_name: str
    recipe_path: Path
    shards_dir: Path
    out_dir: Path
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    wandb: WandbSection = field(default_factory=WandbSection)

    def to_dict(self) -> dict[str, Any]:
        """Primitives only: stored in checkpoints (loaded with weights_only=True) and sent to wandb."""
        return {
            "recipe_name": self.recipe_name,
            "recipe_path": str(self.recipe_path),
            "shards_dir": str(self.shards_dir),
            "out_dir": str(self.out_dir),
            "model": asdict(self.model),
            "train": asdict(self.train),
            "eval": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.eval).items()},
            "wandb": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.wandb).items()},
        }


def _bool_text(raw: dict[str, Any]) -> dict[str, Any]:
    # `compile = true` reads more naturally in TOML than "true"; accept both.
    if isinstance(raw.get("compile"), bool):
        raw = {**raw, "compile": "true" if raw["compile"] else "false"}
    return raw


def pretrain_config_from_recipe(recipe: Recipe) -> PretrainConfig:
    """Validate the recipe's training sections (errors name the key and the recipe file)."""
    src = Path(recipe.path)
    model = parse_section(ModelSection, recipe.section("model"), section="model", source=src)
    train = parse_section(TrainSection, _bool_text(recipe.section("train")), section="train", source=src)
    ev = parse_section(EvalSection, recipe.section("eval"), section="eval", source=src)
    wb = parse_section(WandbSection, recipe.section("wandb"), section="wandb", source=src)
    out_dir = Path(train.out_dir) if train.out_dir else recipe.stage_dir("pretrain")
    return PretrainConfig(recipe_name=recipe.name, recipe_path=src, shards_dir=recipe.stage_dir("shards"),
                          out_dir=out_dir, model=model, train=train, eval=ev, wandb=wb)


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step is assembled, and how many steps the run takes."""

    micro_batch_size: int  # B per process
    seq_len: int  # T
    world_size: int
    grad_accum_steps: int  # micro-steps per optimizer step in each process
    total_batch_tokens: int  # = B * T * world_size * grad_accum_steps
    max_steps: int

    def describe(self) -> str:
        return (f"batch: {self.total_batch_tokens:,} tokens/step = B {self.micro_batch_size} x T {self.seq_len} x "
                f"{self.world_size} process(es) x {self.grad_accum_steps} micro-step(s); "
                f"{self.max_steps:,} steps = {self.max_steps * self.total_batch_tokens:,} tokens")


def batch_plan(train: TrainSection, seq_len: int, world_size: int, source: Path | str = "recipe") -> BatchPlan:
    """The step arithmetic: total batch = B * T * processes * accumulation; steps = budget // total batch.

    GPT-2 124M on 8 GPUs: 524,288 = 64 * 1024 * 8 * 1, and 10,000,000,000 // 524,288 = 19,073 steps.
    On one GPU the same total batch needs 8 micro-steps of 64 x 1024 before each optimizer step.
    """
    per_micro_step = train.micro_batch_size * seq_len * world_size
    if train.total_batch_tokens % per_micro_step != 0:
        raise ValueError(
            f"{source}: train.total_batch_tokens = {train.total_batch_tokens:,} is not a multiple of "
            f"B x T x processes = {train.micro_batch_size} x {seq_len} x {world_size} = {per_micro_step:,}")
    accum = train.total_batch_tokens // per_micro_step
    max_steps = train.max_steps if train.max_steps is not None else train.token_budget // train.total_batch_tokens
    if max_steps < 1:
        raise ValueError(f"{source}: train.token_budget = {train.token_budget:,} buys no step of "
                         f"{train.total_batch_tokens:,} tokens")
    return BatchPlan(train.micro_batch_size, seq_len, world_size, accum, train.total_batch_tokens, max_steps)


class BatchWarmup:
    """How many windows each process takes per micro-step at a given step: GPT-3's batch-size warm-up.

    GPT-3 grew its batch linearly from 32K tokens to the full batch over the first 4-12B tokens. Early in
    training the gradient is large and consistent, so small batches already point the right way and buy
    more updates for the same tokens; later a bigger batch averages away the noise that starts to matter.
    The trade-off: the same number of steps then sees fewer tokens (the ramp's steps are cheaper and the
    run ends a little below its token budget), and the small early batches give the GPUs less work per
    kernel. Off by default, as in build-nanogpt.

    The batch shrinks through the rows per micro-step, b of B, with the accumulation and the processes
    unchanged: one step carries b * total_batch_tokens / B tokens, the same whatever the number of GPUs,
    and every micro-step of every process has b full windows, so averaging over micro-steps and ranks is
    still the mean over the step. With W = batch_warmup_tokens and n the tokens of the steps before:

        b = min(B, 1 + (B - 1) * n // W)

    in integers: a pure function of the step number, so a resumed run (on any number of GPUs) takes
    exactly the batches an uninterrupted one takes. The loader hands out windows by position in one
    global stream, so b * processes windows per micro-step keep the ranks disjoint.
    """

    def __init__(self, micro_batch_size: int, total_batch_tokens: int, warmup_tokens: int):
        self.full, self.warmup = micro_batch_size, warmup_tokens
        self.tokens_per_row = total_batch_tokens // micro_batch_size  # one row in every micro-step and process
        self._rows: list[int] = []           # b of the steps computed so far (only while ramping)
        self._before: list[int] = [0]        # tokens of the steps before step i
        self._full_from: int | None = None   # first step at the full batch (everything after is arithmetic)

    @classmethod
    def from_plan(cls, train: TrainSection, plan: BatchPlan) -> BatchWarmup:
        return cls(plan.micro_batch_size, plan.total_batch_tokens, train.batch_warmup_tokens)

    def _extend_to(self, step: int) -> None:
        while self._full_from is None and len(self._rows) <= step:
            before = self._before[-1]
            b = self.full if before >= self.warmup else min(self.full, 1 + (self.full - 1) * before // self.warmup)
            if b == self.full:
                self._full_from = len(self._rows)
                return
            self._rows.append(b)
            self._before.append(before + b * self.tokens_per_row)

    def micro_batch(self, step: int) -> int:
        """Rows per micro-step per process at `step` (0-based)."""
        self._extend_to(step)
        return self.full if self._full_from is not None and step >= self._full_from else self._rows[step]

    def tokens_before(self, step: int) -> int:
        """Tokens of all steps before `step`: the `tokens` a run has consumed after `step` steps."""
        self._extend_to(step)
        if self._full_from is None or step <= self._full_from:
            return self._before[step]
        return self._before[self._full_from] + (step - self._full_from) * self.full * self.tokens_per_row

    def step_tokens(self, step: int) -> int:
        return self.micro_batch(step) * self.tokens_per_row

    @property
    def active(self) -> bool:
        return self.warmup > 0

    def describe(self) -> str:
        if not self.active:
            return "batch warm-up: off"
        self._extend_to(10**9)  # stops at the first full-batch step
        return (f"batch warm-up: {self.tokens_per_row:,} -> {self.full * self.tokens_per_row:,} tokens/step over the "
                f"first {self.warmup:,} tokens ({self._full_from:,} steps at a smaller batch)")

