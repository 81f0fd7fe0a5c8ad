"""Wires a config to the trainer: device, process group, seeds, run folder, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from xlm.config import Config, to_toml
from xlm.training.distributed import DistEnv, init_distributed, pick_device, shutdown
from xlm.training.trainer import METRICS, Task, Trainer, TrainingError, seed_everything


def refuse_used_run_folder(out: Path) -> None:
    """A run started without ``resume`` must not mix its log and checkpoints with those of an
    earlier run in the same folder: refuse, naming what is there, before anything is written."""
    found = [name for name in (METRICS, "checkpoints", "best", "final") if (out / name).exists()]
    if found:
        raise TrainingError(
            f"{out} already holds a run ({', '.join(found)}): continue it with --resume, "
            f"or start this one elsewhere (train.out_dir=...) or after deleting {out}"
        )


def run_task(
    cfg: Config,
    make_task: Callable[[DistEnv], Task],
    describe: Callable[[Task, torch.device, DistEnv], str],
    resume: str | None = None,
    on_start: Callable[[Task, Path], None] | None = None,
    on_end: Callable[[Task, Path], None] | None = None,
) -> dict[str, float]:
    """Train the task built by ``make_task`` with ``cfg.train`` / ``cfg.optim`` in one process,
    or one per device under ``torchrun``; ``resume`` is None, "latest" or a checkpoint path.
    Rank 0 writes ``config.toml`` into the run folder, prints ``describe(task, ...)`` and, after
    training, calls ``on_end(task, run folder)``."""
    tcfg = cfg.train  # type: ignore[attr-defined]
    env = init_distributed(pick_device(tcfg.device, option="train.device="))
    device = pick_device(tcfg.device, env.local_rank, "train.device=")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        seed_everything(tcfg.seed + env.rank)
        out = Path(tcfg.out_dir)
        if resume is None:
            refuse_used_run_folder(out)
        task = make_task(env)
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
            if on_start is not None:
                on_start(task, out)
            print(describe(task, device, env))
        trainer = Trainer(task, tcfg, cfg.optim, env, device, cfg.model_dump(mode="json"))  # type: ignore[attr-defined]
        if resume is not None:
            found = trainer.resume(None if resume == "latest" else Path(resume))
            if not found and env.is_main:
                print(f"no checkpoint in {trainer.ckpt_dir}: starting from scratch")
        metrics = trainer.train()
        if env.is_main and on_end is not None:
            on_end(task, out)
        return metrics
    finally:
        shutdown(env)


def run_training(cfg: Any, resume: str | None = None) -> dict[str, float]:
    """Pretrain with ``cfg`` (a PretrainConfig)."""
    from xlm.tasks.pretraining import PretrainTask

    def describe(task: Any, device: torch.device, env: DistEnv) -> str:
        n = task.model.num_parameters()
        return f"model: {n / 1e6:.2f}M parameters; languages {task.lang2id}; device {device}; processes {env.world}"

    def center(task: Any, out: Path) -> None:
        """Each language's mean sentence vectors, stored in best/ and final/ (see xlm center)."""
        from xlm.evaluation.centering import center_checkpoint

        for name in ("best", "final"):
            if (out / name / "manifest.json").is_file():
                center_checkpoint(out / name, cfg.data.path, "train", CENTER_SENTENCES, task.device)
                print(f"language means of {CENTER_SENTENCES} train sentences per language stored in {out / name}")

    return run_task(
        cfg, lambda env: PretrainTask(cfg, cfg.train.seed, env.rank, env.world), describe, resume, on_end=center
    )


CENTER_SENTENCES = 2000  # per language, for the means stored at the end of pretraining
