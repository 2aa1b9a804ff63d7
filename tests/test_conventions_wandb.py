"""WANDB_MODE, WANDB_PROJECT, WANDB_NAME and WANDB_DIR win over the recipe's [wandb] section, as wandb users
expect: `WANDB_MODE=disabled` starts no run whatever the recipe says, and a run can be sent elsewhere
without editing it. Real offline wandb runs, each in its own process (wandb starts a service process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pretrain_helpers import ROOT

from train.config import WandbSection
from train.logger import WandbLoginError, WandbSettingError, check_wandb_login, wandb_settings

START = """
import json, sys
from pathlib import Path
from train.config import WandbSection
from train.logger import RunLogger
logger = RunLogger(Path(sys.argv[1]), wandb_cfg=WandbSection(mode=sys.argv[2], project="recipe-project"),
                   run_config={"x": 1}, resume_step=None, run_name="recipe-name")
run = logger.wandb_run
print(json.dumps(None if run is None else {"project": run.project, "name": run.name, "dir": run.dir}))
logger.finish({})
"""


def start_logger(out_dir, recipe_mode: str, **env: str):
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    full = {**base, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", **env}
    r = subprocess.run([sys.executable, "-c", START, str(out_dir), recipe_mode], cwd=ROOT, env=full,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_wandb_mode_disabled_beats_an_offline_recipe(tmp_path):
    assert start_logger(tmp_path / "run", "offline", WANDB_MODE="disabled") is None
    assert not (tmp_path / "run" / "wandb").exists()


def test_the_environment_names_and_places_the_run(tmp_path):
    run = start_logger(tmp_path / "run", "disabled", WANDB_MODE="offline", WANDB_PROJECT="env-project",
                       WANDB_NAME="env-name", WANDB_DIR=str(tmp_path / "elsewhere"))
    assert run["project"] == "env-project" and run["name"] == "env-name"
    assert run["dir"].startswith(str(tmp_path / "elsewhere" / "wandb" / "offline-run-"))
    assert not (tmp_path / "run" / "wandb").exists()


def test_without_variables_the_recipe_decides(tmp_path):
    run = start_logger(tmp_path / "run", "offline")
    assert run["project"] == "recipe-project" and run["name"] == "recipe-name"
    assert run["dir"].startswith(str(tmp_path / "run" / "wandb" / "offline-run-"))


def test_settings_and_login_check_follow_the_environment(tmp_path, monkeypatch):
    cfg = WandbSection(mode="online", project="p", tags=("a",))
    assert wandb_settings(cfg, {}) == cfg
    got = wandb_settings(cfg, {"WANDB_MODE": "dryrun", "WANDB_TAGS": "x, y", "WANDB_RUN_GROUP": "g"})
    assert (got.mode, got.tags, got.group, got.project) == ("offline", ("x", "y"), "g", "p")
    with pytest.raises(WandbSettingError, match="WANDB_MODE='sometimes'"):
        wandb_settings(cfg, {"WANDB_MODE": "sometimes"})

    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))   # no ~/.netrc, no API key: online cannot log in
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_wandb_login(cfg)                           # the recipe says online, the environment offline: fine
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(WandbLoginError, match="WANDB_MODE=online"):
        check_wandb_login(WandbSection(mode="offline"))
