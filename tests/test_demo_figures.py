"""The README's demo figures show what the demo produces today.

docs/img/demo.json holds the numbers of a real demo run (`make docs` writes it with the figures, from the
artifacts: scripts/demo_figures.py). Checked here:
- the README quotes those numbers and embeds the figures; docs/demo_samples.md is the JSON's samples;
- today's code, run on the demo recipe in a temporary directory, gives the same documents, tokenizer and
  token counts, and from the same seed the same step-0 val loss and first training losses (`slow`: ~30 s,
  still part of `make test`). The last val loss would need the whole run (minutes); its first steps
  pin the data, the initialisation, the schedule and the model, which is what could move it.
A change that moves any of these fails here, and `make docs` (after `make pretrain FORCE=1`) is the fix.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
NUMBERS = json.loads((DOCS / "img" / "demo.json").read_text(encoding="utf-8"))
README = (REPO / "README.md").read_text(encoding="utf-8")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def demo_figures_script():
    spec = importlib.util.spec_from_file_location("demo_figures", REPO / "scripts" / "demo_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------- what is committed
def test_figures_are_committed_and_embedded_in_the_readme():
    for name in ("demo_loss.png", "demo_doc_lengths.png"):
        assert (DOCS / "img" / name).read_bytes().startswith(PNG_MAGIC), name
        assert f"](docs/img/{name})" in README, f"README does not embed docs/img/{name}"
    assert "docs/demo_samples.md" in README


def test_readme_quotes_the_demo_numbers():
    last = str(NUMBERS["steps"])
    quoted = {
        "final val loss": f"{NUMBERS['val_loss'][last]:.4f}",
        "step-0 val loss": f"{NUMBERS['val_loss']['0']:.4f}",
        "unigram entropy": f"{NUMBERS['unigram_entropy']:.4f}",
        "parameters": f"{NUMBERS['parameters']:,}",
        "documents": f"{NUMBERS['raw']['documents']:,}",
        "train tokens": f"{NUMBERS['shards']['train']['tokens']:,}",
        "val tokens": f"{NUMBERS['shards']['val']['tokens']:,}",
        "all tokens": f"{NUMBERS['shards']['train']['tokens'] + NUMBERS['shards']['val']['tokens']:,}",
    }
    missing = {what: value for what, value in quoted.items() if value not in README}
    assert not missing, f"README does not state the demo's {missing} (docs/img/demo.json)"
    # The README's copy of the run's log must be this run's, not an older one's: every val loss line of it.
    example = README.split("### Example: the demo run", 1)[1].split("\n#", 1)[0]
    logged = {f"step {int(step):>6} | val loss {loss:.4f}" for step, loss in NUMBERS["val_loss"].items()}
    shown = re.findall(r"^step +\d+ \| val loss \d+\.\d{4}", example, flags=re.M)
    assert shown and set(shown) <= logged, f"the README's demo log shows {set(shown) - logged}: not this run's"


def test_samples_page_is_the_runs_samples():
    assert (DOCS / "demo_samples.md").read_text(encoding="utf-8") == demo_figures_script().samples_markdown(NUMBERS)
    first, last = NUMBERS["samples"]
    assert first == "0" and last == str(NUMBERS["steps"]) and len(NUMBERS["samples"][last]) >= 1


# ------------------------------------------------------------------------------------ what the code gives
def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def demo_today(tmp_path_factory):
    """The demo recipe, unchanged but for where its artifacts go, through the data stages."""
    from contract.recipe import load_recipe
    from pipelines import data, learn_tokenizer, shards

    root = tmp_path_factory.mktemp("demo")
    text = (REPO / "configs" / "demo.toml").read_text(encoding="utf-8")
    text = re.sub(r'^name = "demo"\n', f'name = "demo"\nartifacts_root = {json.dumps(str(root))}\n', text,
                  count=1, flags=re.M)
    (root / "demo.toml").write_text(text, encoding="utf-8")
    recipe = load_recipe(root / "demo.toml")
    manifests = {stage: module.run(recipe, progress_bar=False, log=quiet)
                 for stage, module in (("raw", data), ("tokenizer", learn_tokenizer), ("shards", shards))}
    return recipe, manifests


@pytest.mark.slow
def test_data_stages_give_the_committed_counts(demo_today):
    _, m = demo_today
    assert {k: m["raw"]["stats"][k] for k in ("documents", "characters")} == NUMBERS["raw"]
    assert m["tokenizer"]["tokenizer"]["fingerprint"] == NUMBERS["tokenizer"]["fingerprint"]
    today = {split: {"documents": s["documents"], "tokens": s["tokens"], "shards": len(s["shards"])}
             for split, s in m["shards"]["splits"].items()}
    assert today == NUMBERS["shards"]


@pytest.mark.slow
def test_first_training_steps_give_the_committed_losses(demo_today):
    from train.trainer import Trainer

    recipe, _ = demo_today
    from train.config import pretrain_config_from_recipe

    cfg = pretrain_config_from_recipe(recipe)
    steps = len(NUMBERS["first_train_losses"])
    trainer = Trainer(cfg, stop_at_step=steps, log=False, save_checkpoints=False)
    try:
        assert trainer.raw_model.num_params(non_embedding=False) == NUMBERS["parameters"]
        trainer.run()
    finally:
        trainer.close()
    records = [json.loads(line) for line in (cfg.out_dir / "metrics.jsonl").read_text().splitlines()]
    val0 = next(r["val_loss"] for r in records if r["type"] == "val" and r["step"] == 0)
    assert val0 == pytest.approx(NUMBERS["val_loss"]["0"], abs=2e-4)
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert losses == pytest.approx(NUMBERS["first_train_losses"], abs=1e-3)
