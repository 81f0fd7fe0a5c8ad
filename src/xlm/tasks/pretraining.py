"""Cross-lingual LM pretraining: CLM, MLM and TLM over prepared data, objectives alternated,
each batch from one language (or pair) drawn with q_i ∝ p_i^α.

Objectives are written the way users of the original XLM write them::

    [objectives]
    mlm = ["en", "fr", "en-fr"]   # a pair under MLM means TLM
    clm = []
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from xlm.config import Config, ConfigError, Count, NonNegative, NonNegativeInt, Positive, Probability
from xlm.data.batching import (
    PairBatcher,
    dropped_report,
    language_probabilities,
    sentence_rows,
)
from xlm.data.dataset import PreparedData, empty_split_error
from xlm.evaluation.centering import center_checkpoint
from xlm.evaluation.perplexity import lm_scores
from xlm.fileio import status
from xlm.model.pretrained import ModelInfo, write_model_files
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.objectives.contrastive import pair_retrieval_accuracy
from xlm.objectives.masking import MaskingConfig, frequency_weights
from xlm.objectives.registry import (
    DataShape,
    Objective,
    ObjectiveContext,
    ObjectiveLoss,
    Source,
    registered,
)
from xlm.training.distributed import DistEnv
from xlm.training.optim import OptimConfig
from xlm.training.runner import run_task
from xlm.training.trainer import StepOutput, TrainConfig, Trainer


class DataConfig(Config):
    path: str = "runs/demo/data"  # a directory written by `xlm prepare`
    lang_alpha: NonNegative = 0.7  # q_i ∝ p_i^alpha when choosing the language of a batch
    bptt: Annotated[int, Field(ge=2)] = 256  # tokens per stream row (CLM/MLM)
    batch_size: Count = 32  # stream rows per batch
    tlm_max_tokens: Count = 4096  # token budget of a TLM batch (padded size)
    max_len: Count = 254  # longest sentence of a training pair, in words: longer pairs are dropped


class ObjectivesConfig(Config):
    mlm: list[str] = ["en"]
    clm: list[str] = []
    xlco: list[str] = []  # pairs trained with cross-lingual contrast (InfoXLM), e.g. ["en-fr"]
    mlm_weight: NonNegative = 1.0
    tlm_weight: NonNegative = 1.0
    clm_weight: NonNegative = 1.0
    xlco_weight: NonNegative = 3.0  # measured: 3 beat 1 and 10 (docs/results.md)
    word_pred: Annotated[float, Field(gt=0, le=1)] = 0.15  # share of tokens predicted
    mask_probs: tuple[Probability, Probability, Probability] = (0.8, 0.1, 0.1)  # mask / random / keep
    sample_alpha: NonNegative = 0.0  # >0: choose MLM positions with weights ∝ count^-alpha
    xlco_batch_size: Annotated[int, Field(ge=2)] = 256  # pairs per XLCo batch (the in-batch negatives)
    xlco_temperature: Positive = 0.05
    xlco_pooling: Literal["first", "mean"] = "mean"  # sentence vector: first token (</s>) or mean
    # layers whose states are pooled (one loss each): 0 = embeddings, -1 = last; the embedding layer
    # aligned a demo-size model fastest per CPU-minute (docs/results.md)
    xlco_layers: list[int] = [0]
    xlco_turns: Count = 6  # turns of XLCo in each round of the objectives (MLM, TLM, ... take one)
    xlco_queue: NonNegativeInt = (
        0  # >0: keys from a momentum encoder, negatives also from a queue of this many keys per side
    )
    xlco_momentum: Probability = 0.999  # momentum encoder weights: m = momentum * m + (1 - momentum) * trained

    @field_validator("mlm", "clm", "xlco")
    @classmethod
    def _entries(cls, v: list[str]) -> list[str]:
        for e in v:
            parts = e.split("-")
            if not all(parts) or len(parts) > 2 or (len(parts) == 2 and parts[0] == parts[1]):
                raise ValueError(f"{e!r} is neither a language ('en') nor a pair ('en-fr')")
        return v

    @model_validator(mode="after")
    def _some(self) -> ObjectivesConfig:
        if not self.mlm and not self.clm and not self.xlco:
            raise ValueError("at least one of mlm / clm / xlco must list a language")
        if any("-" in e for e in self.clm):
            raise ValueError("clm takes languages, not pairs")
        if any("-" not in e for e in self.xlco):
            raise ValueError("xlco takes pairs of translations ('en-fr'), not languages")
        if self.xlco and not self.xlco_layers:
            raise ValueError("xlco_layers: give at least one layer (0 = embeddings, -1 = last)")
        if self.xlco_queue and len(self.xlco_layers) != 1:
            raise ValueError(f"xlco_queue={self.xlco_queue} works with one layer; xlco_layers={self.xlco_layers}")
        if abs(sum(self.mask_probs) - 1.0) > 1e-6:
            raise ValueError(f"mask_probs={list(self.mask_probs)} (mask, random, keep) must sum to 1")
        return self


class EvalConfig(Config):
    splits: list[str] = ["valid"]
    max_rows: Count = 64  # stream rows (of bptt tokens) evaluated per language and split
    max_pairs: Count = 512  # pairs evaluated per language pair and split
    seed: NonNegativeInt = 1234  # masking seed: evaluation is deterministic


class PretrainConfig(Config):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objectives: ObjectivesConfig = ObjectivesConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _tlm_budget(self) -> PretrainConfig:
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


class PretrainTask:
    """Implements the trainer's Task protocol for the registered objectives (CLM, MLM, TLM,
    XLCo, ...; see :mod:`xlm.objectives.registry`), which take turns step by step."""

    def __init__(self, cfg: PretrainConfig, seed: int, rank: int = 0, world: int = 1):
        self.cfg = cfg
        self.prepared = PreparedData.open(cfg.data.path)
        langs = self.prepared.languages or sorted(
            {p for e in cfg.objectives.mlm + cfg.objectives.clm + cfg.objectives.xlco for p in e.split("-")}
        )
        self.lang2id = {lang: i for i, lang in enumerate(langs)}
        obj = cfg.objectives
        for field_name, entries in (
            ("objectives.mlm", obj.mlm),
            ("objectives.clm", obj.clm),
            ("objectives.xlco", obj.xlco),
        ):
            for e in entries:
                for lang in e.split("-"):
                    if lang not in self.lang2id:
                        raise ConfigError(f"{field_name}: {lang!r} is not a language of {cfg.data.path} ({langs})")
        self._refuse_empty_eval_splits()
        vocab = self.prepared.vocab
        model_cfg = cfg.model.model_copy(
            update={"vocab_size": len(vocab), "n_langs": len(langs), "pad_index": vocab.specials.pad}
        )
        if cfg.data.bptt > model_cfg.max_positions:
            raise ConfigError(f"data.bptt={cfg.data.bptt} exceeds model.max_positions={model_cfg.max_positions}")
        if cfg.data.max_len + 2 > model_cfg.max_positions:
            raise ConfigError(f"data.max_len={cfg.data.max_len} + 2 exceeds model.max_positions")
        self.model_cfg = model_cfg
        self.model = TransformerModel(model_cfg)
        self.forward_model: nn.Module = self.model
        self.device = torch.device("cpu")
        p0, p1, p2 = obj.mask_probs
        self.masking = MaskingConfig.for_vocab(vocab, obj.word_pred, p0, p1, p2)
        self.seed, self.rank, self.world = seed, rank, world
        # same seed on every rank: all processes train the same objective and language each step
        self.choice_rng = np.random.default_rng([seed, 17])
        self.mask_gen = torch.Generator().manual_seed(seed * 1000 + rank + 1)
        self.freq_weights = self._frequency_weights() if obj.sample_alpha > 0 else None
        d = cfg.data
        nl = model_cfg.n_layers
        for layer in obj.xlco_layers:
            if not -(nl + 1) <= layer <= nl:
                raise ConfigError(
                    f"objectives.xlco_layers: {layer} does not exist, the model has layers 0 (embeddings) .. {nl}"
                )
        ctx = ObjectiveContext(
            self.prepared, self.lang2id, DataShape(d.bptt, d.batch_size, d.tlm_max_tokens, d.max_len), obj,
            self.masking, self.mask_gen, self.freq_weights, seed, rank, world, self.model,
        )  # fmt: skip
        self.objectives: dict[str, Objective] = {}
        for name, cls in registered().items():
            entries = cls.entries(obj)
            if entries:
                self.objectives[name] = cls(ctx, entries)
        # each objective takes its turns (``{name}_turns``, default 1) in every round
        self.kinds = [k for k, o in self.objectives.items() for _ in range(type(o).turns(obj))]
        self.weights = {k: type(o).weight(obj) for k, o in self.objectives.items()}
        self.probs = {
            k: language_probabilities([s.size for s in o.sources], d.lang_alpha) for k, o in self.objectives.items()
        }

    def _refuse_empty_eval_splits(self) -> None:
        """An evaluated split file with no sentences would score NaN, and the best checkpoint
        would be chosen on NaN: refused at start-up, naming the file. (A split that is absent is
        simply not evaluated.)"""
        obj, prepared = self.cfg.objectives, self.prepared
        for split in self.cfg.eval.splits:
            for lang in dict.fromkeys(e for e in obj.mlm + obj.clm if "-" not in e):
                if prepared.has_mono(split, lang) and len(prepared.mono(split, lang)) == 0:
                    raise empty_split_error(prepared.mono_prefix(split, lang), split, lang)
            for e in (x for x in obj.mlm if "-" in x):
                a, b = _pair(e)
                if prepared.has_para(split, a, b) and len(prepared.para(split, a, b)) == 0:
                    raise empty_split_error(prepared.para_prefix(split, a, b, a), split, e)

    def startup_report(self) -> list[str]:
        """One line per training pair (TLM, XLCo): the pairs dropped for a side longer than
        ``data.max_len`` words (they are dropped, not cut)."""
        lines: dict[str, str] = {}
        for sources in self.groups.values():
            for s in sources:
                if isinstance(s.sampler, PairBatcher) and s.name not in lines:
                    lines[s.name] = dropped_report(s.name, s.sampler.data, self.cfg.data.max_len)
        return list(lines.values())

    def _frequency_weights(self) -> torch.Tensor:
        counts = np.zeros(self.model_cfg.vocab_size, dtype=np.int64)
        for lang in self.lang2id:
            if self.prepared.has_mono("train", lang):
                data = self.prepared.mono("train", lang)
                counts += np.bincount(np.asarray(data.tokens), minlength=len(counts))[: len(counts)]
        vocab = self.prepared.vocab
        return frequency_weights(
            torch.from_numpy(counts), self.cfg.objectives.sample_alpha, (vocab.words_start, vocab.words_end)
        )

    # --- Task protocol --------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """The model, and the objectives' own modules (saved with training checkpoints only,
        e.g. XLCo's momentum encoder ``xlco_momentum``)."""
        out: dict[str, nn.Module] = {"model": self.model}
        for o in self.objectives.values():
            out.update(o.modules())
        return out

    def bind(self, wrapped: dict[str, nn.Module], device: torch.device) -> None:
        self.forward_model, self.device = wrapped["model"], device

    @property
    def groups(self) -> dict[str, list[Source]]:
        """Each objective's sources (languages or pairs)."""
        return {k: o.sources for k, o in self.objectives.items()}

    def train_batch(self, micro_step: int) -> StepOutput:
        # objectives take turns by update: the micro-batches accumulated into one update all
        # come from one objective (each from a language or pair drawn with q_i)
        update = micro_step // max(1, self.cfg.optim.accumulate)
        kind = self.kinds[update % len(self.kinds)]
        objective = self.objectives[kind]
        source = objective.sources[int(self.choice_rng.choice(len(objective.sources), p=self.probs[kind]))]
        out = ObjectiveLoss(*objective.loss(self.forward_model, source, self.device))
        return StepOutput(out.loss, f"{kind}/{source.name}", out.n_tokens, weight=self.weights[kind], n_pred=out.n_pred)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "samplers": {f"{k}/{s.name}": s.sampler.state_dict() for k, v in self.groups.items() for s in v},
            "choice_rng": self.choice_rng.bit_generator.state,
            "mask_gen": self.mask_gen.get_state().tolist(),
        }
        extra = {k: o.state_dict() for k, o in self.objectives.items() if o.state_dict()}
        if extra:
            state["objectives"] = extra
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in self.groups.items():
            for s in v:
                s.sampler.load_state_dict(state["samplers"][f"{k}/{s.name}"])
        self.choice_rng.bit_generator.state = state["choice_rng"]
        self.mask_gen.set_state(torch.tensor(state["mask_gen"], dtype=torch.uint8))
        for k, o in self.objectives.items():
            o.load_state_dict(state.get("objectives", {}).get(k, {}))

    def model_info(self) -> ModelInfo:
        obj = self.cfg.objectives
        extra: dict[str, Any] = {"objectives": {"mlm": obj.mlm, "clm": obj.clm, "xlco": obj.xlco}}
        if obj.xlco:  # sentence vectors are best made as XLCo trained them
            extra["sentence_embedding"] = {"pooling": obj.xlco_pooling, "layers": list(obj.xlco_layers)}
        lower = bool(self.prepared.info.get("lowercase_and_remove_accent", False))
        return ModelInfo(self.model_cfg, self.lang2id, lower, extra)

    def write_model_files(self, directory: Path) -> None:
        write_model_files(directory, self.model, self.model_info(), self.prepared.directory)

    # --- evaluation -------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        metrics = evaluate_lm(self.model, self.prepared, self.lang2id, self.cfg, self.masking, self.device)
        metrics.update(evaluate_xlco(self.model, self.prepared, self.lang2id, self.cfg, self.device))
        return metrics


@torch.no_grad()
def evaluate_xlco(
    model: nn.Module,
    prepared: PreparedData,
    lang2id: dict[str, int],
    cfg: PretrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """For each XLCo pair: P@1 of finding a sentence's translation among the first
    ``eval.max_pairs`` pairs of the split (cosine of the vectors XLCo trains, both directions):
    ``valid/xlco/en-fr/p@1`` and their mean ``valid/xlco/p@1``."""
    obj = cfg.objectives
    metrics: dict[str, float] = {}
    for split in cfg.eval.splits:
        scores = []
        for e in obj.xlco:
            a, b = _pair(e)
            if not prepared.has_para(split, a, b):
                continue
            data = prepared.para(split, a, b)
            ids = np.arange(min(len(data), cfg.eval.max_pairs))
            m = cfg.data.max_len
            p = pair_retrieval_accuracy(
                model, sentence_rows(data.src, ids, m), sentence_rows(data.tgt, ids, m), (lang2id[a], lang2id[b]),
                obj.xlco_layers, obj.xlco_pooling, device,
            )  # fmt: skip
            metrics[f"{split}/xlco/{e}/p@1"] = p
            scores.append(p)
        if scores:
            metrics[f"{split}/xlco/p@1"] = float(np.mean(scores))
    return metrics


def evaluate_lm(
    model: nn.Module,
    prepared: PreparedData,
    lang2id: dict[str, int],
    cfg: PretrainConfig,
    masking: MaskingConfig,
    device: torch.device,
) -> dict[str, float]:
    """Perplexity and accuracy per split, objective and language (deterministic masking):
    keys like ``valid/mlm/en/ppl``, ``valid/tlm/en-fr/acc`` and averages ``valid/mlm/ppl``."""
    obj, ev = cfg.objectives, cfg.eval
    metrics: dict[str, float] = {}
    per_kind: dict[str, list[float]] = {}
    for split in ev.splits:
        scores = lm_scores(
            model, prepared, lang2id, split, masking,
            mlm=[e for e in obj.mlm if "-" not in e], clm=obj.clm, tlm=[_pair(e) for e in obj.mlm if "-" in e],
            bptt=cfg.data.bptt, max_len=cfg.model.max_positions - 2, max_rows=ev.max_rows, max_pairs=ev.max_pairs, seed=ev.seed,
            device=device,
        )  # fmt: skip
        for (kind, entry), score in scores.items():
            metrics[f"{split}/{kind}/{entry}/ppl"] = score.ppl
            metrics[f"{split}/{kind}/{entry}/acc"] = score.acc
            per_kind.setdefault(f"{split}/{kind}", []).append(score.ppl)
    for k, v in per_kind.items():
        metrics[f"{k}/ppl"] = float(np.mean(v))
    return metrics


def run_training(cfg: PretrainConfig, resume: str | None = None) -> dict[str, float]:
    """Pretrain with ``cfg`` through the task runner, then store each language's mean sentence
    vectors in best/ and final/."""

    def describe(task: PretrainTask, device: torch.device, env: DistEnv) -> str:
        n = task.model.num_parameters()
        head = f"model: {n / 1e6:.2f}M parameters; languages {task.lang2id}; device {device}; processes {env.world}"
        return "\n".join([head, *task.startup_report()])

    def center(task: PretrainTask, out: Path, trainer: Trainer) -> None:
        """Each language's mean sentence vectors, stored in best/ and final/ (see xlm center)."""
        for name in ("best", "final"):
            if (out / name / "manifest.json").is_file():
                center_checkpoint(out / name, cfg.data.path, "train", CENTER_SENTENCES, task.device)
                status(f"language means of {CENTER_SENTENCES} train sentences per language stored in {out / name}")

    return run_task(
        cfg, lambda env: PretrainTask(cfg, cfg.train.seed, env.rank, env.world), describe, resume, on_end=center
    )


CENTER_SENTENCES = 2000  # per language, for the means stored at the end of pretraining
