"""Write the README's figures and numbers of the demo run from its artifacts (`make docs` runs it).

    .venv/bin/python scripts/demo_figures.py                      # artifacts/demo -> docs/
    .venv/bin/python scripts/demo_figures.py --artifacts DIR --out DIR

What it writes, all from files the stages wrote (nothing is trained or measured here):

    docs/img/demo_loss.png          the loss curve, drawn from the run's metrics.jsonl as the stage draws its
                                    loss.png (train/logger.py `loss_figure`)
    docs/img/demo_doc_lengths.png   `make inspect`'s histogram of document lengths, per split
    docs/img/demo.json              the numbers the README quotes: documents, token counts, parameters, the val
                                    loss at every evaluation, the first train losses, the samples
    docs/demo_samples.md            the samples at step 0 and at the last step, side by side

tests/test_demo_figures.py checks that the README states demo.json's numbers, and that today's code still
produces them: the data stages' counts exactly, and the first training steps' losses from the same seed. So a
change that moves the demo's numbers fails there, with `make docs` as the fix.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIRST_STEPS = 5  # train losses recorded for the reproduction check (the demo's warm-up lasts 50 steps)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def metrics(pretrain_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """metrics.jsonl by record type ("train", "val", "sample", "summary")."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for line in (pretrain_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_type.setdefault(record["type"], []).append(record)
    return by_type


def parameter_count(pretrain_dir: Path) -> int:
    """The run's model, as its checkpoint describes it, counted as GPT-2's papers count (tied head once)."""
    import torch

    from model import GPT, GPTConfig
    from train.checkpoint import load_checkpoint

    config = GPTConfig(**load_checkpoint(pretrain_dir, mmap=True)["model_config"])
    with torch.device("meta"):
        return GPT(config).num_params(non_embedding=False)


def demo_numbers(art: Path) -> dict[str, Any]:
    raw, tok, shards = (read_json(art / stage / "manifest.json") for stage in ("raw", "tokenizer", "shards"))
    run = metrics(art / "pretrain")
    last = run["train"][-1]["step"]
    samples = {step: [s["text"] for s in run["sample"] if s["step"] == step] for step in (0, last)}
    return {
        "recipe": art.name,
        "raw": {"documents": raw["stats"]["documents"], "characters": raw["stats"]["characters"]},
        "tokenizer": {"n_vocab": tok["tokenizer"]["n_vocab"], "fingerprint": tok["tokenizer"]["fingerprint"]},
        "shards": {split: {"documents": s["documents"], "tokens": s["tokens"], "shards": len(s["shards"])}
                   for split, s in shards["splits"].items()},
        "parameters": parameter_count(art / "pretrain"),
        "steps": last,
        "tokens_trained": run["train"][-1]["tokens"],
        "first_train_losses": [r["loss"] for r in run["train"][:FIRST_STEPS]],
        "val_loss": {str(r["step"]): round(r["val_loss"], 4) for r in run["val"]},
        "unigram_entropy": round(run["summary"][-1]["unigram_entropy"], 4),
        "samples": {str(step): texts for step, texts in samples.items()},
    }


def samples_markdown(numbers: dict[str, Any]) -> str:
    """A two-column table: what the untrained model writes next to what the trained one writes."""
    first, last = numbers["samples"]
    steps = [f"step {step} (val loss {numbers['val_loss'][step]})" for step in (first, last)]

    def cell(text: str) -> str:  # one table cell: markup characters escaped, line breaks shown as <br>
        for char, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\\", "\\\\"), ("|", "\\|"),
                              ("*", "\\*"), ("_", "\\_"), ("`", "\\`")):
            text = text.replace(char, escaped)
        return text.replace("\n", "<br>")

    lines = [f"# Samples of the {numbers['recipe']} run, before and after training",
             "",
             "Written by `make docs` (scripts/demo_figures.py) from the run's metrics.jsonl. Each row is one sample of "
             "the same prompt, drawn with the same seed, from the model at the first and at the last evaluation.",
             "",
             f"| {steps[0]} | {steps[1]} |",
             "|---|---|"]
    lines += [f"| {cell(a)} | {cell(b)} |" for a, b in zip(numbers["samples"][first], numbers["samples"][last])]
    return "\n".join(lines) + "\n"


def draw_loss(art: Path, path: Path) -> None:
    import matplotlib.pyplot as plt

    from train.logger import loss_figure

    run = metrics(art / "pretrain")
    fig = loss_figure(run["train"], run.get("val", []), run["summary"][-1]["unigram_entropy"], art.name)
    fig.savefig(path, format="png")
    plt.close(fig)


def write_all(art: Path, out: Path) -> dict[str, Any]:
    img = out / "img"
    img.mkdir(parents=True, exist_ok=True)
    numbers = demo_numbers(art)
    draw_loss(art, img / "demo_loss.png")
    subprocess.run([sys.executable, "-m", "pipelines.inspect", str(art / "shards"), "--no-verify", "--top", "0",
                    "--plot", str(img / "demo_doc_lengths.png")], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    (img / "demo.json").write_text(json.dumps(numbers, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "demo_samples.md").write_text(samples_markdown(numbers), encoding="utf-8")
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo_figures.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=REPO / "artifacts" / "demo",
                        help="the demo recipe's artifacts directory (default: artifacts/demo)")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where docs/ is (default: docs)")
    args = parser.parse_args(argv)
    if not (args.artifacts / "pretrain" / "metrics.jsonl").is_file():
        print(f"error: no pretraining run in {args.artifacts}: run `make pretrain` first", file=sys.stderr)
        return 2
    n = write_all(args.artifacts, args.out)
    last = str(n["steps"])
    print(f"docs: {args.out}/img/demo_loss.png, demo_doc_lengths.png, demo.json, {args.out}/demo_samples.md "
          f"(step {last}: val loss {n['val_loss'][last]})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
