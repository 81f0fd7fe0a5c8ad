"""Run by tests/test_distributed.py under torchrun (2 processes) and directly (1 process):
one training step of the real Trainer on a fixed batch, each rank taking its share of rows.

``ddp_worker.py --finetune SPY_DIR XLM_ARGS...`` instead runs ``xlm XLM_ARGS...`` exactly as
``python -m xlm`` does, and leaves per-process evidence in SPY_DIR: ``rank{r}.safetensors``
(the weights each process holds when training ends) and ``rank{r}.json`` (the checkpoint
folders this process wrote, the token rows of each of its training batches)."""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from task_stubs import NoEvalNoStateTask

from xlm.data.batching import Batch
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.objectives.language_modeling import clm_loss
from xlm.training.distributed import init_distributed, shutdown
from xlm.training.optim import OptimConfig
from xlm.training.trainer import StepOutput, TrainConfig, Trainer


class FixedTask(NoEvalNoStateTask):
    def __init__(self, rank: int, world: int):
        torch.manual_seed(0)
        cfg = ModelConfig(
            vocab_size=60, n_langs=2, emb_dim=32, n_layers=2, n_heads=2, dropout=0.0, attention_dropout=0.0
        )
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


def finetune(spy_dir: str, argv: list[str]) -> int:
    from xlm import checkpoint_io as checkpoint
    from xlm.cli import main as cli_main
    from xlm.tasks import classification

    rank = int(os.environ.get("RANK", "0"))
    spy = Path(spy_dir)
    spy.mkdir(parents=True, exist_ok=True)
    saves: list[str] = []
    batches: list[list[list[int]]] = []

    real_save = checkpoint.save_checkpoint

    def save_checkpoint(directory, *args, **kwargs):
        saves.append(Path(directory).name)
        return real_save(directory, *args, **kwargs)

    real_logits = classification.classify_logits

    def classify_logits(encoder, head, batch, center=False):
        if torch.is_grad_enabled():  # a training batch (evaluation runs under no_grad)
            rows = [t[:n].tolist() for t, n in zip(batch.tokens, batch.lengths.tolist())]
            batches.append([[lang, *row] for lang, row in zip(batch.langs.tolist(), rows)])
        return real_logits(encoder, head, batch, center)

    real_train = Trainer.train

    def train(self):
        metrics = real_train(self)
        weights = {
            f"{name}.{k}": v.detach().clone().contiguous()
            for name, m in self.modules.items()
            for k, v in m.state_dict().items()
        }
        save_file(weights, str(spy / f"rank{rank}.safetensors"))
        return metrics

    checkpoint.save_checkpoint = save_checkpoint
    classification.classify_logits = classify_logits
    Trainer.train = train
    code = cli_main(argv)
    (spy / f"rank{rank}.json").write_text(json.dumps({"saves": saves, "batches": batches}))
    return code


if __name__ == "__main__":
    if sys.argv[1] == "--finetune":
        sys.exit(finetune(sys.argv[2], sys.argv[3:]))
    main(sys.argv[1])
