from pathlib import Path

import pytest

from xlm.config import load_config
from xlm.reports import format_table, plot_training
from xlm.tasks.pretraining import PretrainConfig
from xlm.training.runner import run_training

from conftest import tiny_config_overrides

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.name.startswith(("mt_", "classify"))], ids=lambda p: p.name)
def test_shipped_pretrain_configs_validate(path):
    cfg = load_config(PretrainConfig, path)
    assert cfg.objectives.mlm or cfg.objectives.clm


def test_table_alignment():
    t = format_table(["lang", "ppl"], [["en", 12.345], ["fr", float("nan")]])
    lines = t.splitlines()
    assert lines[0].split() == ["lang", "ppl"] and "12.35" in lines[2] and lines[3].endswith("-")


def test_plot_run_writes_pngs(tiny_data, tmp_path):
    run = tmp_path / "run"
    over = tiny_config_overrides(tiny_data, run, steps=4) + ["train.eval_every=2", "train.eval_at_start=true"]
    run_training(load_config(PretrainConfig, None, over))
    paths = plot_training(run)
    assert {p.name for p in paths} == {"loss.png", "ppl.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
