"""Paper fidelity of the training recipe: weight decay groups, the paper configs' optimizer and
masking, label smoothing over real tokens only, and gradient accumulation within one objective."""

from pathlib import Path

import torch
from torch import nn

from xlm.config import load_config
from xlm.model.seq2seq import EncoderDecoder
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.tasks.pretraining import PretrainConfig
from xlm.tasks.translation import MTConfig
from xlm.training.optim import OptimConfig, build_optimizer

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
