"""Run by tests/test_distributed.py under torchrun (2 processes) and directly (1 process):
one training step of the real Trainer on a fixed batch, each rank taking its share of rows."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from xlm.data.batching import Batch
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.objectives.language_modeling import clm_loss
from xlm.training.distributed import init_distributed, shutdown
from xlm.training.optim import OptimConfig
from xlm.training.trainer import StepOutput, TrainConfig, Trainer


class FixedTask:
    def __init__(self, rank: int, world: int):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=60, n_langs=2, emb_dim=32, n_layers=2, n_heads=2, dropout=0.0, attention_dropout=0.0)
        self.model = TransformerModel(cfg)
        g = torch.Generator().manual_seed(1)
        rows = torch.randint(14, 60, (4, 24), generator=g)
        share = 4 // world
        self.rows = rows[rank * share : (rank + 1) * share]
        self.fwd = self.model

    def modules(self):
        return {"model": self.model}

    def bind(self, wrapped, device):
        self.fwd = wrapped["model"]

    def train_batch(self, micro_step):
        b = Batch(self.rows, torch.full((len(self.rows),), 24), torch.zeros_like(self.rows))
        out = clm_loss(self.fwd, b)
        return StepOutput(out.loss, "clm/x", b.n_tokens)

    def evaluate(self):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def write_model_files(self, directory: Path):
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(directory / "model.safetensors"))


def main(out: str) -> None:
    device = torch.device("cpu")
    env = init_distributed(device)
    task = FixedTask(env.rank, env.world)
    # eps >> |g| makes Adam's first update lr * g / eps: the weight change is the gradient itself
    optim = OptimConfig(lr=1.0, eps=1.0, weight_decay=0.0, warmup_steps=1, clip_norm=0.0, schedule="constant")
    train = TrainConfig(out_dir=out, max_steps=1, eval_every=0, save_every=0, progress=False, eval_at_start=False)
    Trainer(task, train, optim, env, device).train()
    shutdown(env)


if __name__ == "__main__":
    main(sys.argv[1])
