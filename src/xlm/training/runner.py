"""Wires a config to the trainer: device, process group, seeds, run folder, resume.

One runner for every task (pretraining, MT, fine-tuning): the used-folder check, the saved
``config.toml`` and what a resumed run may change, ``torch.cuda.set_device`` and TF32 under
``torchrun``, and resume all come from :func:`run_task`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from xlm.config import Config, ConfigError, load_config, read_config_data, to_toml, validate_config
from xlm.fileio import check_output_folder, status, write_atomic
from xlm.training.distributed import DistEnv, init_distributed, pick_device, shutdown
from xlm.training.optim import OptimConfig
from xlm.training.trainer import METRICS, Task, TrainConfig, Trainer, TrainingError, seed_everything

C = TypeVar("C", bound=Config)
T = TypeVar("T", bound=Task)  # the task type a caller's hooks are written for
CONFIG_FILE = "config.toml"

# Settings a resumed run may change: they decide how long it runs, how often it logs, evaluates
# and saves, where it computes and where its folder now is, never the model, the data or the
# optimizer. Any other difference from the run's saved config.toml is refused.
RESUME_MAY_CHANGE = (
    "train.out_dir", "train.max_steps", "train.max_minutes", "train.log_every", "train.eval_every", "train.save_every",
    "train.keep_last", "train.patience", "train.max_nonfinite", "train.eval_at_start", "train.progress",
    "train.threads", "train.device", "train.precision", "train.tensorboard", "output.json_file", "output.plot_file",
)  # fmt: skip


def refuse_used_run_folder(out: Path) -> None:
    """A run started without ``resume`` must not mix its log and checkpoints with those of an
    earlier run in the same folder: refuse, naming what is there, before anything is written."""
    found = [name for name in (METRICS, "checkpoints", "best", "final") if (out / name).exists()]
    if found:
        raise TrainingError(
            f"{out} already holds a run ({', '.join(found)}): continue it with --resume, "
            f"or start this one elsewhere (train.out_dir=... or --out) or after deleting {out}"
        )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(saved: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) for every setting that differs."""
    a, b = _flatten(saved.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def run_sections(cfg: Config) -> tuple[TrainConfig, OptimConfig]:
    """The ``train`` and ``optim`` sections that every task's config has (each task's config
    class declares them among its own sections, in its own order)."""
    train, optim = getattr(cfg, "train", None), getattr(cfg, "optim", None)
    if not isinstance(train, TrainConfig) or not isinstance(optim, OptimConfig):
        raise TypeError(f"{type(cfg).__name__} has no train and optim sections: the runner cannot run it")
    return train, optim


def read_saved_config(cls: type[C], out: Path) -> C | None:
    """The ``config.toml`` of the run in ``out``, or None if it has none."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return validate_config(cls, data, str(path))


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resume_config(cls: type[C], given: dict[str, Any], source: str = "command line") -> C:
    """The config of a resumed run: its saved ``config.toml`` with the settings ``given`` (the
    TOML file and overrides of this command line) on top, so that nothing has to be repeated.
    A run folder without a saved config gets ``given`` alone. :func:`run_task` then refuses what
    a resumed run may not change."""
    cfg = validate_config(cls, given, source)
    saved = read_saved_config(cls, Path(run_sections(cfg)[0].out_dir))
    if saved is None:
        return cfg
    return validate_config(
        cls, _deep_merge(saved.model_dump(mode="json"), given), f"{source} on top of the saved config"
    )


def load_run_config(cls: type[C], path: str | Path | None, overrides: list[str], resume: str | None) -> C:
    """A training command's config: the TOML file and overrides, or, for ``--resume``, those on
    top of the run's saved ``config.toml`` (see :func:`resume_config`)."""
    if resume is None:
        return load_config(cls, path, overrides)
    return resume_config(cls, read_config_data(path, overrides), str(path) if path else "command-line overrides")


def check_resume_changes(saved: Config, new: Config, out: Path) -> list[tuple[str, Any, Any]]:
    """The allowed changes of a resumed run; raises ConfigError naming the others."""
    changes = config_changes(saved, new)
    refused = [c for c in changes if c[0] not in RESUME_MAY_CHANGE]
    if refused:
        listed = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, a, b in refused)
        raise ConfigError(
            f"{out / CONFIG_FILE}: a resumed run cannot change the model, the data or the optimizer ({listed}). "
            f"Resume without these changes, or start a new run elsewhere. A resumed run may change: "
            f"{', '.join(RESUME_MAY_CHANGE)}"
        )
    return changes


@dataclass
class TrainPlan:
    """What the trainer gets, when a task decides it once built (e.g. fine-tuning: steps from
    the epochs, learning rates from the model's size)."""

    train: TrainConfig
    optim: OptimConfig
    lr_scale: dict[str, float] | None = None


def run_task(
    cfg: Config,
    make_task: Callable[[DistEnv], T],
    describe: Callable[[T, torch.device, DistEnv], str],
    resume: str | None = None,
    on_start: Callable[[T, Path], None] | None = None,
    on_end: Callable[[T, Path, Trainer], None] | None = None,
    plan: Callable[[T], TrainPlan] | None = None,
    log: Callable[[str], None] = status,
) -> dict[str, float]:
    """Train the task built by ``make_task`` with ``cfg.train`` / ``cfg.optim`` (or what ``plan``
    returns) in one process, or one per device under ``torchrun``; ``resume`` is None, "latest"
    or a checkpoint path. Before anything is loaded, a fresh run refuses a used folder and a
    resumed one refuses changes to its saved config. Rank 0 writes ``config.toml`` into the run
    folder, logs ``describe(task, ...)`` and, after training, calls ``on_end(task, run folder,
    trainer)``. An interrupted run saves a checkpoint and raises ``xlm.errors.Interrupted``."""
    tcfg, ocfg = run_sections(cfg)
    out = Path(tcfg.out_dir)
    check_output_folder(out, "run folder")
    changes: list[tuple[str, Any, Any]] = []
    if resume is None:
        refuse_used_run_folder(out)
    else:
        saved = read_saved_config(type(cfg), out)
        if saved is not None:
            changes = check_resume_changes(saved, cfg, out)
    env = init_distributed(pick_device(tcfg.device, option="train.device="))
    device = pick_device(tcfg.device, env.local_rank, "train.device=")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    say = log if env.is_main else (lambda *a, **k: None)
    try:
        seed_everything(tcfg.seed + env.rank)
        task = make_task(env)
        p = plan(task) if plan is not None else TrainPlan(tcfg, ocfg)
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_atomic(out / CONFIG_FILE, to_toml(cfg))
            for k, a, b in changes:
                say(f"resumed run: {k} changed from {a!r} to {b!r} (recorded in {out / CONFIG_FILE})")
            if on_start is not None:
                on_start(task, out)
            say(describe(task, device, env))
        trainer = Trainer(task, p.train, p.optim, env, device, cfg.model_dump(mode="json"), say, p.lr_scale)
        if resume is not None:
            found = trainer.resume(None if resume == "latest" else Path(resume))
            if not found:
                say(f"no checkpoint in {trainer.ckpt_dir}: starting from scratch")
            elif changes:
                trainer.record({"type": "resume", "step": trainer.step, "changed": {k: [a, b] for k, a, b in changes}})
        metrics = trainer.train()
        if env.is_main and on_end is not None:
            on_end(task, out, trainer)
        return metrics
    finally:
        shutdown(env)
