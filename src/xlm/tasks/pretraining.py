"""Cross-lingual LM pretraining: CLM, MLM and TLM over prepared data, objectives alternated,
each batch from one language (or pair) drawn with q_i ∝ p_i^α.

Objectives are written the way users of the original XLM write them::

    [objectives]
    mlm = ["en", "fr", "en-fr"]   # a pair under MLM means TLM
    clm = []
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import field_validator, model_validator
from torch import nn

from xlm.config import Config, ConfigError
from xlm.data.batching import (
    Batch,
    PairBatcher,
    StreamSampler,
    concat_pair,
    language_probabilities,
    sentence_rows,
)
from xlm.data.dataset import MonolingualData, ParallelData, PreparedData
from xlm.model.pretrained import ModelInfo, write_model_files
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.objectives.language_modeling import LossOutput, apply_masking, clm_loss, mlm_loss
from xlm.objectives.masking import MaskingConfig, frequency_weights
from xlm.training.optim import OptimConfig
from xlm.training.trainer import StepOutput, TrainConfig


class DataConfig(Config):
    path: str = "runs/demo/data"  # a directory written by `xlm prepare`
    lang_alpha: float = 0.7  # q_i ∝ p_i^alpha when choosing the language of a batch
    bptt: int = 256  # tokens per stream row (CLM/MLM)
    batch_size: int = 32  # stream rows per batch
    tlm_max_tokens: int = 4096  # token budget of a TLM batch (padded size)
    max_len: int = 254  # words kept per sentence of a pair (longer ones are truncated)


class ObjectivesConfig(Config):
    mlm: list[str] = ["en"]
    clm: list[str] = []
    mlm_weight: float = 1.0
    tlm_weight: float = 1.0
    clm_weight: float = 1.0
    word_pred: float = 0.15
    mask_probs: tuple[float, float, float] = (0.8, 0.1, 0.1)  # mask / random / keep
    sample_alpha: float = 0.0  # >0: choose MLM positions with weights ∝ count^-alpha

    @field_validator("mlm", "clm")
    @classmethod
    def _entries(cls, v: list[str]) -> list[str]:
        for e in v:
            parts = e.split("-")
            if not all(parts) or len(parts) > 2 or (len(parts) == 2 and parts[0] == parts[1]):
                raise ValueError(f"{e!r} is neither a language ('en') nor a pair ('en-fr')")
        return v

    @model_validator(mode="after")
    def _some(self) -> "ObjectivesConfig":
        if not self.mlm and not self.clm:
            raise ValueError("at least one of mlm / clm must list a language")
        if any("-" in e for e in self.clm):
            raise ValueError("clm takes languages, not pairs")
        return self


class EvalConfig(Config):
    splits: list[str] = ["valid"]
    max_rows: int = 64  # stream rows (of bptt tokens) evaluated per language and split
    max_pairs: int = 512  # pairs evaluated per language pair and split
    seed: int = 1234  # masking seed: evaluation is deterministic


class PretrainConfig(Config):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objectives: ObjectivesConfig = ObjectivesConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _tlm_budget(self) -> "PretrainConfig":
        # a TLM batch holds at least one pair of up to 2 * max_len words plus 4 delimiters;
        # a smaller budget could never be met (every batch would be one over-budget pair)
        longest = 2 * self.data.max_len + 4
        if any("-" in e for e in self.objectives.mlm) and self.data.tlm_max_tokens < longest:
            raise ConfigError(
                f"data.tlm_max_tokens={self.data.tlm_max_tokens} is smaller than one maximal TLM pair "
                f"(2 * data.max_len + 4 = {longest} tokens): raise data.tlm_max_tokens or lower data.max_len"
            )
        return self


def _pair(entry: str) -> tuple[str, str]:
    a, b = entry.split("-")
    return a, b


@dataclass
class _Source:
    """One language or pair of one objective, with its sampler."""

    name: str
    size: int
    sampler: StreamSampler | PairBatcher
    langs: tuple[int, ...]


class PretrainTask:
    """Implements the trainer's Task protocol for CLM/MLM/TLM."""

    def __init__(self, cfg: PretrainConfig, seed: int, rank: int = 0, world: int = 1):
        self.cfg = cfg
        self.prepared = PreparedData.open(cfg.data.path)
        langs = self.prepared.languages or sorted(
            {p for e in cfg.objectives.mlm + cfg.objectives.clm for p in e.split("-")}
        )
        self.lang2id = {lang: i for i, lang in enumerate(langs)}
        obj = cfg.objectives
        for field_name, entries in (("objectives.mlm", obj.mlm), ("objectives.clm", obj.clm)):
            for e in entries:
                for lang in e.split("-"):
                    if lang not in self.lang2id:
                        raise ConfigError(f"{field_name}: {lang!r} is not a language of {cfg.data.path} ({langs})")
        vocab = self.prepared.vocab
        model_cfg = cfg.model.model_copy(update={"vocab_size": len(vocab), "n_langs": len(langs)})
        if cfg.data.bptt > model_cfg.max_positions:
            raise ConfigError(f"data.bptt={cfg.data.bptt} exceeds model.max_positions={model_cfg.max_positions}")
        if cfg.data.max_len + 2 > model_cfg.max_positions:
            raise ConfigError(f"data.max_len={cfg.data.max_len} + 2 exceeds model.max_positions")
        self.model_cfg = model_cfg
        self.model = TransformerModel(model_cfg)
        self.forward_model: nn.Module = self.model
        self.device = torch.device("cpu")
        p0, p1, p2 = obj.mask_probs
        self.masking = MaskingConfig(obj.word_pred, p0, p1, p2, vocab_size=len(vocab))
        self.seed, self.rank, self.world = seed, rank, world
        self.groups: dict[str, list[_Source]] = {}
        self.weights = {"mlm": obj.mlm_weight, "tlm": obj.tlm_weight, "clm": obj.clm_weight}
        d = cfg.data
        for kind, entries in (("mlm", [e for e in obj.mlm if "-" not in e]), ("clm", obj.clm)):
            srcs = []
            for i, lang in enumerate(entries):
                data = self.prepared.mono("train", lang)
                s = StreamSampler(data, self.lang2id[lang], d.bptt, d.batch_size, seed + 7919 * (i + 1), rank, world)
                srcs.append(_Source(lang, data.n_tokens, s, (self.lang2id[lang],)))
            if srcs:
                self.groups[kind] = srcs
        pairs = []
        for i, e in enumerate(x for x in obj.mlm if "-" in x):
            a, b = _pair(e)
            data = self.prepared.para("train", a, b)
            s = PairBatcher(data, d.tlm_max_tokens, d.max_len, seed + 104729 * (i + 1), rank, world)
            pairs.append(_Source(e, data.src.n_tokens + data.tgt.n_tokens, s, (self.lang2id[a], self.lang2id[b])))
        if pairs:
            self.groups["tlm"] = pairs
        self.kinds = [k for k in ("mlm", "tlm", "clm") if k in self.groups]
        self.probs = {k: language_probabilities([s.size for s in v], d.lang_alpha) for k, v in self.groups.items()}
        # same seed on every rank: all processes train the same objective and language each step
        self.choice_rng = np.random.default_rng([seed, 17])
        self.mask_gen = torch.Generator().manual_seed(seed * 1000 + rank + 1)
        self.freq_weights = self._frequency_weights() if obj.sample_alpha > 0 else None

    def _frequency_weights(self) -> torch.Tensor:
        counts = np.zeros(self.model_cfg.vocab_size, dtype=np.int64)
        for lang in self.lang2id:
            if self.prepared.has_mono("train", lang):
                data = self.prepared.mono("train", lang)
                counts += np.bincount(np.asarray(data.tokens), minlength=len(counts))[: len(counts)]
        return frequency_weights(torch.from_numpy(counts), self.cfg.objectives.sample_alpha)

    # --- Task protocol --------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def bind(self, wrapped: dict[str, nn.Module], device: torch.device) -> None:
        self.forward_model, self.device = wrapped["model"], device

    def _pair_batch(self, source: _Source, ids: np.ndarray, data: ParallelData) -> Batch:
        a, b = source.langs
        return concat_pair(
            sentence_rows(data.src, ids, self.cfg.data.max_len), sentence_rows(data.tgt, ids, self.cfg.data.max_len), a, b
        )

    def train_batch(self, micro_step: int) -> StepOutput:
        kind = self.kinds[micro_step % len(self.kinds)]
        group = self.groups[kind]
        source = group[int(self.choice_rng.choice(len(group), p=self.probs[kind]))]
        if kind == "tlm":
            sampler = source.sampler
            assert isinstance(sampler, PairBatcher)
            batch = self._pair_batch(source, sampler.next_ids(), sampler.data)
        else:
            assert isinstance(source.sampler, StreamSampler)
            batch = source.sampler.next_batch()
        if kind in ("mlm", "tlm"):
            batch = apply_masking(batch, self.masking, self.mask_gen, self.freq_weights)
            out = mlm_loss(self.forward_model, batch.to(self.device))
        else:
            out = clm_loss(self.forward_model, batch.to(self.device))
        return StepOutput(out.loss, f"{kind}/{source.name}", batch.n_tokens, weight=self.weights[kind])

    def state_dict(self) -> dict[str, Any]:
        return {
            "samplers": {f"{k}/{s.name}": s.sampler.state_dict() for k, v in self.groups.items() for s in v},
            "choice_rng": self.choice_rng.bit_generator.state,
            "mask_gen": self.mask_gen.get_state().tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self.groups.items():
            for s in v:
                s.sampler.load_state_dict(state["samplers"][f"{k}/{s.name}"])
        self.choice_rng.bit_generator.state = state["choice_rng"]
        self.mask_gen.set_state(torch.tensor(state["mask_gen"], dtype=torch.uint8))

    def model_info(self) -> ModelInfo:
        return ModelInfo(
            self.model_cfg,
            self.lang2id,
            bool(self.prepared.info.get("lowercase_and_remove_accent", False)),
            {"objectives": {"mlm": self.cfg.objectives.mlm, "clm": self.cfg.objectives.clm}},
        )

    def write_model_files(self, directory: Path) -> None:
        write_model_files(directory, self.model, self.model_info(), self.prepared.directory)

    # --- evaluation -------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        return evaluate_lm(self.model, self.prepared, self.lang2id, self.cfg, self.masking, self.device)


def _accumulate(acc: dict[str, list[float]], key: str, out: LossOutput) -> None:
    a = acc.setdefault(key, [0.0, 0.0, 0.0])
    a[0] += float(out.loss) * out.n_pred
    a[1] += out.n_pred
    a[2] += out.n_correct


def _stream_rows(data: MonolingualData, bptt: int, max_rows: int) -> list[np.ndarray]:
    n = min(max_rows, (data.stream_length - 1) // bptt)
    if n == 0:  # a split shorter than one row: evaluate it as a single short row
        return [np.asarray(data.tokens, dtype=np.int64)]
    return [np.asarray(data.stream(i * bptt, bptt + 1), dtype=np.int64)[:bptt] for i in range(n)]


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    prepared: PreparedData,
    lang2id: dict[str, int],
    cfg: PretrainConfig,
    masking: MaskingConfig,
    device: torch.device,
    batch_rows: int = 16,
) -> dict[str, float]:
    """Perplexity and accuracy per split, objective and language (deterministic masking):
    keys like ``valid/mlm/en/ppl``, ``valid/tlm/en-fr/acc`` and averages ``valid/mlm/ppl``."""
    obj, ev = cfg.objectives, cfg.eval
    acc: dict[str, list[float]] = {}
    for split in ev.splits:
        gen = torch.Generator().manual_seed(ev.seed)
        for kind, entries in (("mlm", [e for e in obj.mlm if "-" not in e]), ("clm", obj.clm)):
            for lang in entries:
                if not prepared.has_mono(split, lang):
                    continue
                rows = _stream_rows(prepared.mono(split, lang), cfg.data.bptt, ev.max_rows)
                for i in range(0, len(rows), batch_rows):
                    chunk = rows[i : i + batch_rows]
                    width = max(len(r) for r in chunk)
                    tokens = torch.full((len(chunk), width), 2, dtype=torch.long)
                    for j, r in enumerate(chunk):
                        tokens[j, : len(r)] = torch.from_numpy(r)
                    lengths = torch.tensor([len(r) for r in chunk])
                    batch = Batch(tokens, lengths, torch.full_like(tokens, lang2id[lang]))
                    if kind == "mlm":
                        out = mlm_loss(model, apply_masking(batch, masking, gen).to(device))
                    else:
                        out = clm_loss(model, batch.to(device))
                    _accumulate(acc, f"{split}/{kind}/{lang}", out)
        for e in (x for x in obj.mlm if "-" in x):
            a, b = _pair(e)
            if not prepared.has_para(split, a, b):
                continue
            data = prepared.para(split, a, b)
            ids = np.arange(min(len(data), ev.max_pairs))
            for i in range(0, len(ids), batch_rows):
                part = ids[i : i + batch_rows]
                batch = concat_pair(
                    sentence_rows(data.src, part, cfg.data.max_len),
                    sentence_rows(data.tgt, part, cfg.data.max_len),
                    lang2id[a],
                    lang2id[b],
                )
                out = mlm_loss(model, apply_masking(batch, masking, gen).to(device))
                _accumulate(acc, f"{split}/tlm/{e}", out)
    metrics: dict[str, float] = {}
    per_kind: dict[str, list[float]] = {}
    for key, (loss_sum, n, correct) in acc.items():
        mean = loss_sum / max(n, 1)
        ppl = float(np.exp(min(mean, 50.0)))
        metrics[f"{key}/ppl"] = ppl
        metrics[f"{key}/acc"] = correct / max(n, 1)
        split, kind, _ = key.split("/")
        per_kind.setdefault(f"{split}/{kind}", []).append(ppl)
    for k, v in per_kind.items():
        metrics[f"{k}/ppl"] = float(np.mean(v))
    return metrics
