"""Where a run reports: the console, metrics.jsonl, a loss-curve PNG, and Weights & Biases.

Only rank 0 of a distributed job creates a RunLogger. Every record is one JSON object per line in
metrics.jsonl, tagged with its kind ("train", "val", "hellaswag", "sample", "summary") and the step, so
the file is trivially greppable and plottable, and survives a crash line by line. When a run resumes
at step s, records of steps > s (written after the checkpoint, then lost with the crash) are
dropped first (a record's step counts completed steps, like the checkpoint's), so the file tells one
consistent story.
"""

from __future__ import annotations

import dataclasses
import json
import math
import netrc
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tokenizer.atomic_write import atomic_path, write_text_atomic
from train.config import WANDB_MODES, WandbSection

WANDB_DEFAULT_HOST = "https://api.wandb.ai"
# [wandb] key -> the variable wandb users set for it. The environment wins over the recipe, as it does
# for wandb itself: `WANDB_MODE=disabled make pretrain` must not start a run because the recipe says
# offline (CI, a quick test), and WANDB_PROJECT / WANDB_NAME / WANDB_DIR send a run elsewhere without
# editing the recipe. WANDB_DIR (where runs are written) has no recipe key: see _start_wandb.
WANDB_ENV = {"mode": "WANDB_MODE", "project": "WANDB_PROJECT", "entity": "WANDB_ENTITY", "run_name": "WANDB_NAME",
             "group": "WANDB_RUN_GROUP", "tags": "WANDB_TAGS"}
WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}   # wandb's older names, still accepted by wandb


class WandbLoginError(RuntimeError):
    """wandb.mode = "online" on a machine that has no W&B credentials."""


class WandbSettingError(ValueError):
    """A WANDB_* variable this project cannot follow (say WANDB_MODE=shared)."""


def wandb_settings(cfg: WandbSection, environ: dict[str, str] | None = None) -> WandbSection:
    """The [wandb] section as the run uses it: every WANDB_* variable that is set replaces its key."""
    env = os.environ if environ is None else environ
    changes: dict[str, object] = {}
    for key, variable in WANDB_ENV.items():
        value = env.get(variable, "").strip()
        if not value:
            continue
        if key == "mode":
            value = WANDB_MODE_ALIASES.get(value.lower(), value.lower())
            if value not in WANDB_MODES:
                raise WandbSettingError(f"{variable}={env[variable]!r} is not one of {', '.join(WANDB_MODES)} "
                                        "(this variable overrides the recipe's wandb.mode)")
        changes[key] = tuple(t.strip() for t in value.split(",") if t.strip()) if key == "tags" else value
    return dataclasses.replace(cfg, **changes) if changes else cfg


def wandb_credentials_present(environ: dict[str, str] | None = None) -> bool:
    """Whether wandb will find an API key, looked up where wandb itself looks, without the network:
    the WANDB_API_KEY variable, else the netrc entry that `wandb login` writes ($NETRC or ~/.netrc,
    machine = the host of WANDB_BASE_URL, api.wandb.ai by default)."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY", "").strip():
        return True
    path = Path(env["NETRC"]).expanduser() if env.get("NETRC") else Path(env.get("HOME", "~")).expanduser() / ".netrc"
    host = urlsplit(env.get("WANDB_BASE_URL") or WANDB_DEFAULT_HOST).netloc
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def check_wandb_login(cfg: WandbSection) -> None:
    """Refuse an online run without credentials before training starts: wandb.init would otherwise stop
    at an interactive login prompt (or fail) after the shards were checked and the model was built.
    The mode is the one the run will use: WANDB_MODE, else the recipe's."""
    mode = wandb_settings(cfg).mode
    if mode == "online" and not wandb_credentials_present():
        said = "WANDB_MODE=online" if cfg.mode != "online" else "wandb.mode = 'online'"
        raise WandbLoginError(
            f"{said} but no W&B API key is set up (neither WANDB_API_KEY nor a ~/.netrc entry "
            "from `wandb login`): run `wandb login` once, or use wandb.mode=offline (sync later) or disabled")


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_train_line(rec: dict[str, Any], max_steps: int) -> str:
    mfu = f"{100 * rec['mfu']:5.1f}%" if rec.get("mfu") is not None else "  n/a"
    return (f"step {rec['step']:>6}/{max_steps} | loss {rec['loss']:.4f} | lr {rec['lr']:.3e} | "
            f"norm {rec['grad_norm']:.3f} | {rec['tokens_per_sec']:>10,.0f} tok/s | MFU {mfu} | "
            f"{1000 * rec['dt']:7.1f} ms | ETA {format_duration(rec['eta_s'])}")


class RunLogger:
    def __init__(self, out_dir: Path, *, wandb_cfg: WandbSection, run_config: dict[str, Any], resume_step: int | None,
                 run_name: str, unigram_entropy: float | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.plot_path = self.out_dir / "loss.png"
        self.unigram_entropy = unigram_entropy
        if resume_step is None:
            self.metrics_path.unlink(missing_ok=True)  # a fresh run starts a fresh file
        else:
            self._truncate_after(resume_step)
        self.wandb_run = None
        wandb_cfg = wandb_settings(wandb_cfg)   # WANDB_MODE, WANDB_PROJECT, WANDB_NAME, ... win over the recipe
        self.run_name = wandb_cfg.run_name or run_name   # the plot's title: the name the run has in wandb too
        if wandb_cfg.mode != "disabled":
            self.wandb_run = _start_wandb(wandb_cfg, run_config, run_name, self.out_dir, resume_step)

    def _truncate_after(self, step: int) -> None:
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the crash
            if rec.get("step", 0) > step or rec.get("type") == "summary":
                continue  # logged after the checkpoint: those steps are about to be redone
            kept.append(line)
        write_text_atomic(self.metrics_path, "".join(k + "\n" for k in kept))

    def log(self, record: dict[str, Any], console: str | None = None) -> None:
        if console is not None:
            print(console, flush=True)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            kind = record["type"]
            values = {f"{kind}/{k}": v for k, v in record.items()
                      if k not in ("type", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if kind == "sample":
                values = {}  # text goes to the console and metrics.jsonl; a wandb Table per sample is noise
            if values:
                self.wandb_run.log(values, step=record["step"])

    def records(self, kind: str) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec.get("type") == kind:
                out.append(rec)
        return out

    def figure(self):
        """The loss figure (matplotlib), or None before the first train record: see loss_figure."""
        train = self.records("train")
        if not train:
            return None
        return loss_figure(train, self.records("val"), self.unigram_entropy, self.run_name)

    def plot(self) -> Path | None:
        """loss.png: the figure above, written atomically (it is redrawn at every evaluation)."""
        fig = self.figure()
        if fig is None:
            return None
        import matplotlib.pyplot as plt

        with atomic_path(self.plot_path, durable=False) as tmp:
            fig.savefig(tmp, format="png")  # the format by name: the temporary file ends in .tmp
        plt.close(fig)
        return self.plot_path

    def finish(self, summary: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            for k, v in summary.items():
                if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                    self.wandb_run.summary[k] = v
            self.wandb_run.finish()
            self.wandb_run = None


def smoothing_window(n_steps: int) -> int:
    """Steps the train curve is averaged over: about 1/50 of the run (14 for the demo's 700 steps, 381 for
    GPT-2's 19,073), at least 1 -- wide enough to see the trend through the noise of single batches."""
    return max(1, n_steps // 50)


def smoothed(values: list[float], window: int) -> list[float]:
    """A debiased exponential moving average (TensorBoard's smoothing) with a time constant of `window`
    steps: each point depends only on the steps before it, and dividing by 1 - beta**n removes the pull
    towards 0 that a plain EMA has at the start, so the curve starts on the first loss."""
    beta = 1.0 - 1.0 / window
    out, avg = [], 0.0
    for n, v in enumerate(values, start=1):
        avg = beta * avg + (1.0 - beta) * v
        out.append(avg / (1.0 - beta**n))
    return out


def loss_figure(train: list[dict[str, Any]], val: list[dict[str, Any]], unigram_entropy: float | None,
                run_name: str):
    """The loss plot of a run, titled with its name: the train loss of every step faint (a single batch is
    noisy), its moving average on top (the trend), the val loss as points (measured every eval.every steps:
    a line between them would invent the values in between), the unigram entropy for scale."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot's import
    import matplotlib.pyplot as plt

    steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
    window = smoothing_window(len(losses))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, losses, lw=0.6, alpha=0.25, color="C0", label="train loss (each step)")
    ax.plot(steps, smoothed(losses, window), lw=1.6, color="C0",
            label=f"train loss (moving average, ~{window} steps)" if window > 1 else "train loss")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], linestyle="none", marker="o", ms=4,
                color="C1", label="val loss")
    if unigram_entropy is not None:
        ax.axhline(unigram_entropy, ls="--", color="gray", lw=0.8, label=f"unigram entropy {unigram_entropy:.2f}")
    last = f"val {val[-1]['val_loss']:.3f} at step {val[-1]['step']}" if val else f"step {steps[-1]}"
    ax.set_title(f"{run_name}: loss ({last})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _start_wandb(cfg: WandbSection, run_config: dict[str, Any], run_name: str, out_dir: Path,
                 resume_step: int | None):
    import wandb

    # The run id lives next to the checkpoint, so `make pretrain RESUME=1` continues the same wandb run.
    id_file = out_dir / "wandb_run_id"
    if resume_step is not None and id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(4)  # wandb run ids: short, [a-z0-9]
    run = wandb.init(project=cfg.project, entity=cfg.entity or None, name=cfg.run_name or run_name,
                     group=cfg.group or None, tags=list(cfg.tags) or None, config=run_config, mode=cfg.mode,
                     id=run_id, resume="allow", dir=os.environ.get("WANDB_DIR") or str(out_dir))
    id_file.write_text(run_id)
    return run
