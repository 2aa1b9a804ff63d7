"""Where a run reports: the console, metrics.jsonl, a loss-curve PNG, and Weights & Biases.

Only rank 0 of a distributed job creates a RunLogger. Every record is one JSON object per line in
metrics.jsonl, tagged with its kind ("train", "val", "hellaswag", "sample", "summary") and the step, so
the file is trivially greppable and plottable, and survives a crash line by line. When a run resumes
at step s, records of steps > s (written after the checkpoint, then lost with the crash) are
dropped first (a record's step counts completed steps, like the checkpoint's), so the file tells one
consistent story.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from tokenizer.atomic_write import atomic_path, write_text_atomic
from train.config import WandbSection


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

    def plot(self) -> Path | None:
        """loss.png: train loss per step, val loss at each evaluation, the unigram entropy for scale."""
        train, val = self.records("train"), self.records("val")
        if not train:
            return None
        import matplotlib

        matplotlib.use("Agg")  # no display needed; must precede pyplot's import
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, alpha=0.8, label="train loss")
        if val:
            ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", ms=3, label="val loss")
        if self.unigram_entropy is not None:
            ax.axhline(self.unigram_entropy, ls="--", color="gray", lw=0.8,
                       label=f"unigram entropy {self.unigram_entropy:.2f}")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
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
