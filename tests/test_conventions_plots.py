"""Plots that answer their question at a glance: the loss plot names its run, shows the trend of the train
loss over the per-step noise (kept faint) and the val loss as the measurements it is; the document-length
histograms are normalised per split, so a 100-document val split is as visible as a 4,000-document one."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.inspect import histogram_figure
from train.config import WandbSection
from train.logger import RunLogger, smoothed


@pytest.fixture
def logger(tmp_path):
    rng = random.Random(0)
    log = RunLogger(tmp_path, wandb_cfg=WandbSection(), run_config={}, resume_step=None, run_name="demo")
    for step in range(1, 301):
        log.log({"type": "train", "step": step, "loss": 8.0 * step**-0.2 + rng.uniform(-0.5, 0.5)})
        if step % 100 == 0:
            log.log({"type": "val", "step": step, "val_loss": 8.0 * step**-0.2})
    return log


def test_loss_plot_names_the_run_and_separates_trend_from_noise(logger):
    import matplotlib.pyplot as plt

    fig = logger.figure()
    ax = fig.axes[0]
    assert ax.get_title().startswith("demo: loss")
    raw, trend, val = ax.lines[:3]
    assert raw.get_alpha() <= 0.3 and trend.get_alpha() in (None, 1.0)   # the noise faint, the trend solid
    assert np.std(np.diff(trend.get_ydata())) < np.std(np.diff(raw.get_ydata())) / 5
    assert val.get_linestyle() == "None" and val.get_marker() == "o"     # measurements, not a line
    assert list(val.get_xdata()) == [100, 200, 300]
    plt.close(fig)
    assert logger.plot().stat().st_size > 0


def test_the_plot_title_follows_the_run_name_wandb_shows(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_NAME", "lr-sweep-3")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log = RunLogger(tmp_path, wandb_cfg=WandbSection(), run_config={}, resume_step=None, run_name="demo")
    log.log({"type": "train", "step": 1, "loss": 5.0})
    assert log.figure().axes[0].get_title() == "lr-sweep-3: loss (step 1)"


def test_smoothing_starts_on_the_first_value_and_follows_the_level():
    values = [10.0] + [2.0] * 200
    out = smoothed(values, 10)
    assert out[0] == 10.0 and abs(out[-1] - 2.0) < 1e-6 and all(a >= b for a, b in zip(out, out[1:]))


def test_length_histograms_are_normalised_per_split():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    lengths = {"train": rng.lognormal(5, 1, 4000).astype(int) + 1, "val": rng.lognormal(5, 1, 100).astype(int) + 1}
    fig = histogram_figure(lengths, "demo: document lengths")
    ax = fig.axes[0]
    assert len(ax.patches) == 2   # one filled outline per split (histtype="stepfilled")
    for patch in ax.patches:
        # the outline's top edge: one (left, height), (right, height) pair of vertices per bin
        heights = patch.get_xy()[1:-1:2, 1]
        assert float(heights.sum()) == pytest.approx(1.0), heights.sum()   # 100 val docs weigh as much as 4,000
    assert "share of the split's documents" in ax.get_ylabel()
    plt.close(fig)
