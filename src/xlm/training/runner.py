"""Wires a pretraining config to the trainer: device, process group, seeds, run folder."""

from __future__ import annotations

from pathlib import Path

import torch

from xlm.config import to_toml
from xlm.training.distributed import init_distributed, pick_device, shutdown
from xlm.training.trainer import Trainer, seed_everything


def run_training(cfg, resume: str | None = None) -> dict[str, float]:
    """Pretrain with ``cfg`` (a PretrainConfig); ``resume`` is None, "latest" or a checkpoint path."""
    from xlm.tasks.pretraining import PretrainTask

    tcfg = cfg.train
    probe_env = init_distributed(pick_device(tcfg.device))
    device = pick_device(tcfg.device, probe_env.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = probe_env
    try:
        seed_everything(tcfg.seed + env.rank)
        task = PretrainTask(cfg, tcfg.seed, env.rank, env.world)
        out = Path(tcfg.out_dir)
        if env.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
            n = task.model.num_parameters()
            print(f"model: {n / 1e6:.2f}M parameters; languages {task.lang2id}; device {device}; processes {env.world}")
        trainer = Trainer(task, tcfg, cfg.optim, env, device, cfg.model_dump(mode="json"))
        if resume is not None:
            found = trainer.resume(None if resume == "latest" else Path(resume))
            if not found and env.is_main:
                print(f"no checkpoint in {trainer.ckpt_dir}: starting from scratch")
        return trainer.train()
    finally:
        shutdown(env)
