"""The learning-rate schedule: linear warm-up, then inverse square root (the original XLM's
``adam_inverse_sqrt``), constant or linear decay; and the trainer applies it step by step."""

from __future__ import annotations

import json
import math

import pytest

from xlm.config import load_config
from xlm.tasks.pretraining import PretrainConfig
from xlm.training.optim import OptimConfig, learning_rate
from xlm.training.runner import run_training

LR = 1e-3


def lrs(steps: range, max_steps: int = 0, **kw) -> list[float]:
    cfg = OptimConfig(lr=LR, warmup_steps=4, **kw)
    return [learning_rate(s, cfg, max_steps) for s in steps]


def test_warmup_is_linear_and_reaches_the_peak_at_the_last_warmup_update():
    # update k (0-based) of the warm-up uses lr * (k + 1) / warmup_steps
    for schedule in ("inverse_sqrt", "constant", "linear"):
        assert lrs(range(4), max_steps=20, schedule=schedule) == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3])


def test_inverse_sqrt_decays_as_lr_times_sqrt_warmup_over_step():
    got = lrs(range(3, 100), schedule="inverse_sqrt")
    assert got == pytest.approx([LR * math.sqrt(4 / (s + 1)) for s in range(3, 100)])
    # update 16 (the 16th): half the peak; the 100th: a fifth
    assert lrs(range(15, 16))[0] == pytest.approx(LR / 2) and lrs(range(99, 100))[0] == pytest.approx(LR / 5)


def test_min_lr_floors_the_decay_and_starts_the_warmup():
    cfg = OptimConfig(lr=LR, warmup_steps=4, min_lr=3e-4)
    assert learning_rate(99, cfg) == pytest.approx(3e-4)  # 1e-3 / 5 would be below the floor
    assert learning_rate(0, cfg) == pytest.approx(3e-4 + 0.7e-3 / 4)  # warm-up from min_lr to lr


def test_constant_and_linear_schedules():
    assert lrs(range(4, 50), schedule="constant") == pytest.approx([LR] * 46)
    # linear: from lr after the warm-up down to min_lr at update max_steps
    got = lrs(range(3, 20), max_steps=20, schedule="linear", min_lr=1e-4)
    assert got == pytest.approx([LR - 0.9e-3 * (s + 1 - 4) / 16 for s in range(3, 20)])
    assert got[-1] == pytest.approx(1e-4)


@pytest.mark.usefixtures("restore_threads")
def test_the_trainer_uses_the_schedule_at_every_update(tiny_data, tiny_config_overrides, tmp_path):
    run = tmp_path / "run"
    over = [
        *tiny_config_overrides(tiny_data, run, steps=6),
        "optim.warmup_steps=3",
        "optim.lr=0.002",
        "train.threads=1",
    ]
    cfg = load_config(PretrainConfig, None, over)
    run_training(cfg)
    logged = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "train":
            logged[rec["step"]] = rec["lr"]
    # record of step k = the update made with learning_rate(k - 1)
    assert logged == {k: pytest.approx(learning_rate(k - 1, cfg.optim, 6)) for k in range(1, 7)}
    assert logged[3] == pytest.approx(0.002) and logged[6] == pytest.approx(0.002 * math.sqrt(3 / 6))
