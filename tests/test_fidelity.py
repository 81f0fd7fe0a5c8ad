"""Paper fidelity of the training recipe: weight decay groups, the paper configs' optimizer and
masking, label smoothing over real tokens only, and gradient accumulation within one objective."""

import json
from pathlib import Path

import pytest
import torch
from task_stubs import NoEvalNoStateTask
from torch import nn

from xlm.config import load_config
from xlm.model.seq2seq import EncoderDecoder
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.objectives.translation import smoothed_cross_entropy
from xlm.tasks.pretraining import PretrainConfig, PretrainTask
from xlm.tasks.translation import MTConfig
from xlm.text.vocab import EOS_INDEX, N_SPECIAL, PAD_INDEX
from xlm.training.distributed import DistEnv
from xlm.training.optim import OptimConfig, build_optimizer
from xlm.training.trainer import StepOutput, TrainConfig, Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ModelConfig(vocab_size=60, n_langs=2, emb_dim=16, n_layers=2, n_heads=2, max_positions=32)


def _decayed(opt: torch.optim.Optimizer) -> set[int]:
    return {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}


def test_weight_decay_skips_embeddings_layernorm_and_biases():
    for model in (TransformerModel(TINY), EncoderDecoder(TINY)):
        opt = build_optimizer([model], OptimConfig(weight_decay=0.01))
        decayed = _decayed(opt)
        n_params = sum(len(g["params"]) for g in opt.param_groups)
        assert n_params == len({id(p) for p in model.parameters() if p.requires_grad})  # each once, tied too
        for name, module in model.named_modules():
            for pname, p in ((n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad):
                exempt = isinstance(module, (nn.Embedding, nn.LayerNorm)) or pname == "bias" or p.ndim < 2
                assert (id(p) in decayed) != exempt, f"{name}.{pname}"
        # the decayed ones are exactly the matrices of the attention and feed-forward layers
        assert decayed and all(p.ndim == 2 for g in opt.param_groups if g["weight_decay"] for p in g["params"])
    tied = TransformerModel(TINY)
    assert id(tied.embeddings.weight) not in _decayed(build_optimizer([tied], OptimConfig()))


def test_paper_configs_use_the_original_adam_inverse_sqrt_and_frequency_aware_masking():
    paper = load_config(PretrainConfig, CONFIGS / "paper_mlm_tlm.toml")
    mt = load_config(MTConfig, CONFIGS / "mt_paper_unsupervised.toml")
    for o in (paper.optim, mt.optim):
        assert (o.lr, o.beta1, o.beta2, o.eps, o.weight_decay) == (1e-4, 0.9, 0.98, 1e-8, 0.0)
        assert (o.schedule, o.warmup_steps, o.min_lr, o.clip_norm) == ("inverse_sqrt", 4000, 1e-7, 5.0)
    assert paper.objectives.sample_alpha == 0.5  # weights ∝ count^-0.5, as the paper describes


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1, 1))


class _AccumulationTask(NoEvalNoStateTask):
    """Micro-batch ``i`` predicts ``n_pred[i]`` tokens with values ``x``: its loss is their
    mean of ``w * x``, so its gradient is the mean of its ``x``."""

    def __init__(self, n_pred: list[int]):
        self.model, self.n_pred = _Counting(), n_pred
        self.values = [torch.arange(n, dtype=torch.float32) * (i + 1) for i, n in enumerate(n_pred)]

    def modules(self):
        return {"model": self.model}

    def bind(self, wrapped, device):
        pass

    def train_batch(self, micro_step):
        x = self.values[micro_step % len(self.values)]
        return StepOutput((self.model.w[0, 0] * x).mean(), "mlm/en", len(x), n_pred=len(x))

    def write_model_files(self, directory):
        pass


def test_accumulated_micro_batches_are_weighted_by_predicted_tokens(tmp_path, monkeypatch):
    task = _AccumulationTask([2, 10, 5])
    optim = OptimConfig(accumulate=3, clip_norm=0.0, warmup_steps=1)
    train = TrainConfig(out_dir=str(tmp_path), max_steps=1, eval_every=0, save_every=0, progress=False,
                        eval_at_start=False, log_every=1)  # fmt: skip
    trainer = Trainer(task, train, optim, DistEnv(), torch.device("cpu"))
    grads = []
    step = trainer._optimizer_step
    monkeypatch.setattr(trainer, "_optimizer_step", lambda: (grads.append(float(task.model.w.grad)), step())[1])
    trainer.train()
    every_token = torch.cat(task.values)
    assert grads == [pytest.approx(float(every_token.mean()))]  # not the mean of the three batch means
    assert float(every_token.mean()) != pytest.approx(float(torch.stack([v.mean() for v in task.values]).mean()))
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert logged[0]["loss/mlm/en"] == pytest.approx(0.0)  # w = 0 before the update: the weighted mean of zeros


def test_an_update_accumulates_micro_batches_of_one_objective(tiny_data, tiny_config_overrides, tmp_path):
    overrides = tiny_config_overrides(tiny_data, tmp_path / "run") + ["optim.accumulate=2"]
    cfg = load_config(PretrainConfig, None, overrides)
    task = PretrainTask(cfg, seed=0)
    kinds = [task.train_batch(micro).name.split("/")[0] for micro in range(8)]
    assert kinds == ["mlm", "mlm", "tlm", "tlm", "mlm", "mlm", "tlm", "tlm"]
    assert task.train_batch(8).n_pred > 0  # MLM reports the tokens it predicts (the weights above)


def test_label_smoothing_puts_no_probability_on_pad_and_special_tokens():
    torch.manual_seed(0)
    vocab, eps = 40, 0.1
    logits = torch.randn(6, vocab, requires_grad=True)
    targets = torch.tensor([EOS_INDEX, 20, 21, 39, N_SPECIAL, 30])
    smoothed_cross_entropy(logits, targets, eps).backward()
    # d(mean CE)/d logits = (softmax - q) / rows: recover the target distribution q
    q = torch.softmax(logits.detach(), -1) - logits.grad * len(targets)
    support = vocab - (N_SPECIAL - 1)  # </s> and the ordinary tokens
    assert torch.allclose(q.sum(-1), torch.ones(6), atol=1e-5)
    for i, t in enumerate(targets.tolist()):
        expected = torch.full((vocab,), eps / support)
        expected[[j for j in range(N_SPECIAL) if j != EOS_INDEX]] = 0.0  # <s>, <pad>, <unk>, <special*>
        expected[t] += 1 - eps
        assert torch.allclose(q[i], expected, atol=1e-5)
    assert q[:, PAD_INDEX].abs().max() < 1e-6
    plain = torch.nn.functional.cross_entropy(logits.detach(), targets)
    assert torch.equal(smoothed_cross_entropy(logits.detach(), targets, 0.0), plain)  # eps 0: unchanged
