"""Perplexity of a pretrained model per language on any binarized split, for masked
(MLM) and causal (CLM) language modelling.

It reuses the training-time evaluation (``xlm.tasks.pretraining.evaluate_lm``): the split is
read as a stream ``</s> s1 </s> s2 ...`` cut into rows of ``bptt`` tokens; MLM masks 15% of
the tokens (80/10/10) with a fixed seed, so the figure is deterministic; CLM predicts every
next token of a row. Perplexity = exp(mean cross-entropy over the predicted tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from xlm.data.dataset import PreparedData
from xlm.errors import XLMError
from xlm.model.pretrained import Pretrained

Objective = Literal["mlm", "clm", "both"]
ALL_ROWS = 10**9


def evaluate_perplexity(
    pretrained: Pretrained,
    prepared: PreparedData,
    split: str = "test",
    langs: Sequence[str] | None = None,
    objective: Objective = "both",
    bptt: int = 256,
    max_rows: int = 0,
    seed: int = 1234,
    word_pred: float = 0.15,
) -> dict[str, float]:
    """Keys ``LANG/mlm/ppl``, ``LANG/mlm/acc``, ``LANG/clm/ppl`` ... (``max_rows`` rows of
    ``bptt`` tokens per language; 0: the whole split)."""
    from xlm.objectives.masking import MaskingConfig
    from xlm.tasks.pretraining import DataConfig, EvalConfig, ObjectivesConfig, PretrainConfig, evaluate_lm

    if objective not in ("mlm", "clm", "both"):
        raise XLMError(f"objective {objective!r} is not one of mlm, clm, both")
    if pretrained.vocab.hash != prepared.vocab.hash:
        raise XLMError(
            f"{prepared.directory} was prepared with another vocabulary than the model's "
            f"({prepared.vocab.hash} vs {pretrained.vocab.hash}); re-run `xlm prepare --vocab {pretrained.directory}`"
        )
    info = pretrained.info
    langs = list(langs) if langs else [lang for lang in info.lang2id if prepared.has_mono(split, lang)]
    for lang in langs:
        info.lang_id(lang)
        if not prepared.has_mono(split, lang):
            raise XLMError(f"{prepared.directory}: no {split} split for {lang!r}")
    if not langs:
        raise XLMError(f"{prepared.directory}: no {split} split in any of the model's languages {sorted(info.lang2id)}")
    bptt = min(bptt, pretrained.model.cfg.max_positions)
    kinds = ("mlm", "clm") if objective == "both" else (objective,)
    cfg = PretrainConfig(
        data=DataConfig(path=str(prepared.directory), bptt=bptt, max_len=max(1, bptt - 2)),
        objectives=ObjectivesConfig(
            mlm=langs if "mlm" in kinds else [], clm=langs if "clm" in kinds else [], word_pred=word_pred
        ),
        eval=EvalConfig(splits=[split], max_rows=max_rows if max_rows > 0 else ALL_ROWS, seed=seed),
    )
    o = cfg.objectives
    masking = MaskingConfig.for_vocab(pretrained.vocab, o.word_pred, *o.mask_probs)
    device = next(pretrained.model.parameters()).device
    pretrained.model.eval()
    raw = evaluate_lm(pretrained.model, prepared, info.lang2id, cfg, masking, torch.device(device))
    out: dict[str, float] = {}
    for key, value in raw.items():
        parts = key.split("/")  # split/kind/lang/metric, or split/kind/ppl (averages)
        if len(parts) == 4:
            out[f"{parts[2]}/{parts[1]}/{parts[3]}"] = value
    return out
