"""Cross-lingual classification (XNLI-style): a pretrained encoder, dropout and a linear layer
on the first hidden state (the ``</s>`` that starts every input), fine-tuned on one or more
languages and evaluated on all of them (zero-shot transfer / translate-train).

The fine-tuning is a :class:`~xlm.training.trainer.Task`: the generic trainer does the
optimizer (separate learning rates for encoder and head), checkpoints, one evaluation per
epoch on the valid set and the best epoch (``best/``). A fine-tuned directory holds the
encoder, the head and ``labels.json`` (see :mod:`xlm.model.classifier`, which reads it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from xlm.checkpoint_io import load_tensors
from xlm.config import Config, ConfigError, Count, NonNegative, NonNegativeInt, Positive, Rate
from xlm.data.batching import pad_rows, token_budget_batches
from xlm.data.classification import (
    EncodedSet,
    Example,
    ExampleSet,
    build_row,
    encode_set,
    label_mapping,
    read_examples,
)
from xlm.errors import DataError
from xlm.fileio import check_output_paths, status
from xlm.model.classifier import (
    HEAD_WEIGHTS,
    LABELS_JSON,
    LANGUAGE_MEANS,
    Classifier,
    ClassifierHead,
    classify_logits,
    encode_for_head,
    load_classifier,
    make_batch,
    set_features,
    set_logits,
    text_encoder,
    translate_test_target,
    write_classifier_files,
)
from xlm.model.pretrained import ModelInfo, Pretrained, load_pretrained, write_model_files
from xlm.model.transformer import TransformerModel, pool_states
from xlm.objectives.contrastive import contrastive_loss
from xlm.training.distributed import DistEnv, pick_device
from xlm.training.optim import OptimConfig
from xlm.training.runner import TrainPlan, run_task
from xlm.training.trainer import StepOutput, TrainConfig, Trainer, seed_everything

FormatName = Literal["tsv", "xnli", "mnli-jsonl", "mnli-tsv"]


# --------------------------------------------------------------------------- configuration

# Defaults chosen by the sweep in docs/results.md ("Fine-tuning defaults"): the paper's encoder
# learning rate for its 1024-dim model, scaled as (1024 / emb_dim)^2 for smaller models and
# capped, so that a 256-dim demo model learns; at least AUTO_MIN_UPDATES updates.
PAPER_LR, PAPER_DIM = 2.5e-5, 1024
AUTO_LR_MAX = 1e-3
AUTO_MIN_UPDATES = 600
AUTO_HEAD_LR_SCALE = 1.0


def auto_learning_rate(emb_dim: int) -> float:
    """Encoder learning rate for fine-tuning a model of width ``emb_dim``."""
    return min(AUTO_LR_MAX, PAPER_LR * (PAPER_DIM / emb_dim) ** 2)


def auto_epochs(batches_per_epoch: int, min_updates: int) -> int:
    """Passes over the training data for at least ``min_updates`` updates (at least 2)."""
    return max(2, -(-min_updates // max(1, batches_per_epoch)))


class ClassifyDataConfig(Config):
    train: dict[str, str] = {}  # language -> file; several languages = translate-train
    valid: dict[str, str] = {}
    test: dict[str, str] = {}
    format: FormatName = "tsv"
    train_format: FormatName | None = None  # e.g. "mnli-jsonl" with format = "xnli"
    eval_format: FormatName | None = None  # valid and test files
    pretokenized: bool = False  # text is already normalized + BPE (``xlm encode`` output)
    max_len: Annotated[int, Field(ge=2)] = 256  # tokens per example, </s> included (longer texts are truncated)
    max_tokens: Count = 2048  # padded tokens per batch
    max_train_examples: NonNegativeInt = 0  # per training file; 0: all

    @field_validator("train", "valid", "test")
    @classmethod
    def _langs(cls, v: dict[str, str]) -> dict[str, str]:
        for lang, path in v.items():
            if not lang or not path:
                raise ValueError(f"expected language = file, got {lang!r} = {path!r}")
        return v

    def format_of(self, split: str) -> str:
        own = self.train_format if split == "train" else self.eval_format
        return own or self.format


class FinetuneOptimConfig(OptimConfig):
    lr: NonNegative = 0.0  # encoder; 0: chosen from the model's size (see auto_learning_rate)
    schedule: Literal["inverse_sqrt", "constant", "linear"] = "linear"
    warmup_steps: NonNegativeInt = 50


class FinetuneTrainConfig(TrainConfig):
    out_dir: str = "runs/classify"
    max_steps: NonNegativeInt = 0  # 0: epochs x batches per epoch; otherwise a cap
    eval_every: NonNegativeInt = 0  # 0: once per epoch
    save_every: NonNegativeInt = 0  # 0: once per epoch
    keep_last: NonNegativeInt = 1
    stopping_metric: str = "valid/acc"
    stopping_mode: Literal["min", "max"] = "max"
    eval_at_start: bool = False
    log_every: Count = 10


class FinetuneConfig(Config):
    epochs: NonNegativeInt = 0  # 0: enough passes for min_updates updates (at least 2)
    min_updates: Count = AUTO_MIN_UPDATES  # with epochs = 0: updates to make, whatever the data size
    dropout: Rate = 0.1  # before the linear layer
    head_lr: NonNegative = 0.0  # learning rate of the head; 0: AUTO_HEAD_LR_SCALE x the encoder's
    random_init: bool = False  # same architecture and vocabulary, fresh weights (baseline)
    # Defaults measured in docs/results.md ("Fine-tuning that keeps the alignment"): the mean of
    # the states, centered per language, over embeddings kept as pretrained
    pooling: Literal["first", "mean"] = "mean"  # the head reads the mean of the states or the first (</s>)
    layer: int = -1  # the encoder layer the head reads: 0 = embeddings, -1 = last (layers above it are unused)
    center: bool = True  # subtract each language's mean pooled vector (batch mean in training, set mean in tests)
    freeze_embeddings: bool = True  # word, position, language and token-type embeddings (and their LayerNorm) kept
    freeze_layers: NonNegativeInt = 0  # the lowest N Transformer blocks kept as pretrained
    # XLCo kept as an auxiliary loss: pairs of translations from an `xlm prepare` directory
    # (its train split), contrasted at the pooled state the head reads, in the same forward pass
    xlco_pairs: list[str] = []  # e.g. ["en-fr", "en-de"]
    xlco_data: str = ""  # the prepared directory holding train.{a}-{b}.{a|b}
    xlco_weight: NonNegative = 1.0
    xlco_batch_size: Annotated[int, Field(ge=2)] = 16
    xlco_temperature: Positive = 0.05

    @field_validator("xlco_pairs")
    @classmethod
    def _pairs(cls, v: list[str]) -> list[str]:
        for e in v:
            parts = e.split("-")
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                raise ValueError(f"{e!r} is not a pair of languages ('en-fr')")
        return v


class OutputConfig(Config):
    json_file: str = ""  # accuracy per test language and "average"
    plot_file: str = ""  # PNG bar chart


class ClassifyConfig(Config):
    checkpoint: str = ""  # a pretrained model directory
    data: ClassifyDataConfig = ClassifyDataConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    optim: FinetuneOptimConfig = FinetuneOptimConfig()
    train: FinetuneTrainConfig = FinetuneTrainConfig()
    output: OutputConfig = OutputConfig()


# --------------------------------------------------------------------------- model


def eval_batches(data: EncodedSet, max_tokens: int) -> list[np.ndarray]:
    order = np.argsort(data.lengths, kind="stable")
    return token_budget_batches(data.lengths, order, max_tokens)


@torch.no_grad()
def evaluate_set(
    encoder: nn.Module, head: nn.Module, data: EncodedSet, device: torch.device, max_tokens: int, center: bool = False
) -> tuple[float, float]:
    """(accuracy in %, mean loss) on one encoded set (modules must be in eval mode)."""
    logits = set_logits(encoder, head, data.rows, data.lang_id, device, max_tokens, center)
    labels = torch.as_tensor(data.labels, dtype=torch.long, device=logits.device)
    n = max(len(data), 1)
    loss_sum = float(F.cross_entropy(logits, labels, reduction="sum")) if len(data) else 0.0
    return 100.0 * int((logits.argmax(-1) == labels).sum()) / n, loss_sum / n


# --------------------------------------------------------------------------- data loading


def load_split(
    cfg: ClassifyDataConfig, split: str, pretrained: Pretrained, label2id: dict[str, int] | None
) -> tuple[list[ExampleSet], dict[str, int]]:
    """Read one split's files; the labels come from the training split when ``label2id`` is None."""
    files: dict[str, str] = getattr(cfg, split)
    sets = []
    for lang, path in files.items():
        pretrained.info.lang_id(lang)  # an unknown language fails before reading anything
        data = read_examples(path, lang, cfg.format_of(split))
        if not data.examples:
            raise DataError(f"{path}: no {split} examples of language {lang!r}")
        if split == "train" and cfg.max_train_examples:
            data.examples = data.examples[: cfg.max_train_examples]
        sets.append(data)
    if label2id is None:
        label2id = {label: i for i, label in enumerate(label_mapping(sets))}
    return sets, label2id


def encode_sets(
    sets: list[ExampleSet], cfg: ClassifyDataConfig, pretrained: Pretrained, label2id: dict[str, int]
) -> list[EncodedSet]:
    out = []
    for s in sets:
        encode = text_encoder(
            pretrained.directory, s.lang, pretrained.info.lowercase_and_remove_accent, cfg.pretokenized
        )
        out.append(
            encode_set(s, encode, label2id, pretrained.info.lang_id(s.lang), cfg.max_len, pretrained.vocab.specials)
        )
    return out


# --------------------------------------------------------------------------- the task


def frozen_modules(encoder: TransformerModel, ft: FinetuneConfig) -> list[nn.Module]:
    """The parts of ``encoder`` that fine-tuning keeps as pretrained: the lowest
    ``freeze_layers`` blocks; with ``freeze_embeddings`` the embedding layer (word, position,
    language and token-type embeddings, and their LayerNorm); and the blocks above the layer
    the head reads (unused)."""
    n_layers = len(encoder.layers)
    if not 0 <= ft.freeze_layers <= n_layers:
        raise ConfigError(f"finetune.freeze_layers={ft.freeze_layers}: the model has {n_layers} layers")
    if not -(n_layers + 1) <= ft.layer <= n_layers:
        raise ConfigError(f"finetune.layer={ft.layer}: the model has layers 0 (embeddings) .. {n_layers}")
    frozen: list[nn.Module] = list(encoder.layers[: ft.freeze_layers])
    if ft.freeze_embeddings:
        embedding_layer = (
            encoder.embeddings, encoder.position_embeddings, encoder.lang_embeddings,
            encoder.token_type_embeddings, encoder.norm_emb,
        )  # fmt: skip
        frozen += [m for m in embedding_layer if m is not None]
    read = ft.layer + n_layers + 1 if ft.layer < 0 else ft.layer
    return frozen + list(encoder.layers[read:])


class ClassifyTask:
    """Implements the trainer's Task protocol: batches of the training sets by a token budget,
    shuffled each epoch; evaluation = accuracy on each valid language and their mean."""

    def __init__(
        self,
        cfg: ClassifyConfig,
        pretrained: Pretrained,
        labels: list[str],
        train: list[EncodedSet],
        valid: list[EncodedSet],
        seed: int,
        rank: int = 0,
        world: int = 1,
    ):
        if pretrained.info.config.max_positions < cfg.data.max_len:
            raise ConfigError(
                f"data.max_len={cfg.data.max_len} exceeds the model's max_positions={pretrained.info.config.max_positions}"
            )
        self.cfg, self.pretrained, self.labels = cfg, pretrained, labels
        self.encoder: TransformerModel = pretrained.model
        # the LM output bias takes no part in classification: frozen, since DDP (without
        # find_unused_parameters) fails on the second step when a trainable weight gets no gradient
        self.encoder.pred_bias.requires_grad_(False)
        ft = cfg.finetune
        for m in frozen_modules(self.encoder, ft):
            m.requires_grad_(False)
        self.head = ClassifierHead(pretrained.info.config.emb_dim, len(labels), ft.dropout, ft.pooling, ft.layer)
        self.forward_encoder: nn.Module = self.encoder
        self.forward_head: nn.Module = self.head
        self.device = torch.device("cpu")
        self.seed, self.rank, self.world = seed, rank, world
        self.valid = valid
        self.rows = [r for s in train for r in s.rows]
        self.row_langs = np.concatenate([np.full(len(s), s.lang_id) for s in train]).astype(np.int64)
        self.row_labels = np.concatenate([s.labels for s in train]).astype(np.int64)
        self.row_lengths = np.asarray([len(r) for r in self.rows], dtype=np.int64)
        self.epoch, self.pos = 0, 0
        self._batches = self._make_batches()
        self.xlco = _AuxiliaryPairs(cfg, pretrained, seed, rank, world) if ft.xlco_pairs else None
        if not self._batches:
            raise DataError(f"{len(self.rows)} training examples cannot feed {world} processes")

    def steps_per_epoch(self) -> int:
        return len(self._batches)

    def _make_batches(self) -> list[np.ndarray]:
        """Shuffle, sort by length within windows (little padding), cut by the token budget,
        shuffle the batch order; rank r of W takes batches r, r+W, ..."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.rows))
        window = 1024
        grouped = [
            order[w : w + window][np.argsort(self.row_lengths[order[w : w + window]], kind="stable")]
            for w in range(0, len(order), window)
        ]
        batches = token_budget_batches(self.row_lengths, np.concatenate(grouped), self.cfg.data.max_tokens)
        batches = [batches[i] for i in rng.permutation(len(batches))]
        per_rank = len(batches) // self.world
        return batches[self.rank :: self.world][:per_rank]

    # --- Task protocol --------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.encoder, "head": self.head}

    def bind(self, wrapped: dict[str, nn.Module], device: torch.device) -> None:
        self.forward_encoder, self.forward_head, self.device = wrapped["model"], wrapped["head"], device

    def train_batch(self, micro_step: int) -> StepOutput:
        if self.pos >= len(self._batches):
            self.epoch, self.pos = self.epoch + 1, 0
            self._batches = self._make_batches()
        ids = self._batches[self.pos]
        self.pos += 1
        rows, langs = [self.rows[i] for i in ids], self.row_langs[ids].tolist()
        labels = torch.as_tensor(self.row_labels[ids], dtype=torch.long, device=self.device)
        ft = self.cfg.finetune
        if self.xlco is None:
            batch = make_batch(rows, langs, self.row_labels[ids].tolist(), self.encoder.cfg.pad_index).to(self.device)
            logits = classify_logits(self.forward_encoder, self.forward_head, batch, ft.center)
            return StepOutput(F.cross_entropy(logits.float(), labels), "cls", int(batch.lengths.sum()))
        # one forward pass over the examples and the translation pairs (DDP allows one per step)
        src, tgt, (a, b) = self.xlco.next_pairs()
        n, m = len(rows), len(src)
        tokens, lengths = pad_rows(rows + src + tgt, self.encoder.cfg.pad_index)
        row_langs = torch.tensor(langs + [a] * m + [b] * m, dtype=torch.long)
        tokens, lengths, row_langs = tokens.to(self.device), lengths.to(self.device), row_langs.to(self.device)
        hidden = encode_for_head(self.forward_encoder, self.forward_head, tokens, lengths, row_langs)
        cls_hidden = hidden[:n, : int(lengths[:n].max())]
        logits = self.forward_head(cls_hidden, lengths[:n], row_langs[:n] if ft.center else None)
        vec = pool_states(hidden[n:], lengths[n:], ft.pooling)
        aux = contrastive_loss(vec[:m], vec[m:], ft.xlco_temperature)
        loss = F.cross_entropy(logits.float(), labels) + ft.xlco_weight * aux
        return StepOutput(loss, "cls+xlco", int(lengths.sum()), stats={"xlco": float(aux.detach())})

    def evaluate(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        accs = []
        for s in self.valid:
            acc, loss = evaluate_set(
                self.encoder, self.head, s, self.device, self.cfg.data.max_tokens, self.cfg.finetune.center
            )
            metrics[f"valid/{s.lang}/acc"] = acc
            metrics[f"valid/{s.lang}/loss"] = loss
            accs.append(acc)
        if accs:
            metrics["valid/acc"] = float(np.mean(accs))
        return metrics

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "pos": self.pos}
        if self.xlco is not None:
            state["xlco"] = self.xlco.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._batches = self._make_batches()
        if self.xlco is not None and "xlco" in state:
            self.xlco.load_state_dict(state["xlco"])

    def model_info(self) -> ModelInfo:
        info = self.pretrained.info
        extra = dict(info.extra)
        extra["classifier"] = {
            "labels": self.labels,
            "dropout": self.cfg.finetune.dropout,
            "pooling": self.cfg.finetune.pooling,
            "layer": self.cfg.finetune.layer,
            "center": self.cfg.finetune.center,
            "finetuned_from": str(self.pretrained.directory),
            "random_init": self.cfg.finetune.random_init,
            "train_languages": sorted(self.cfg.data.train),
        }
        return ModelInfo(info.config, info.lang2id, info.lowercase_and_remove_accent, extra)

    def write_model_files(self, directory: Path) -> None:
        write_model_files(directory, self.encoder, self.model_info(), self.pretrained.directory)
        write_classifier_files(directory, self.head, self.labels)


class _AuxiliaryPairs:
    """Batches of translation pairs for XLCo during fine-tuning, one pair of languages after
    the other (``finetune.xlco_pairs`` from ``finetune.xlco_data``)."""

    def __init__(self, cfg: ClassifyConfig, pretrained: Pretrained, seed: int, rank: int, world: int):
        from xlm.data.batching import PairBatcher
        from xlm.data.dataset import PreparedData

        ft = cfg.finetune
        if not ft.xlco_data:
            raise ConfigError("finetune.xlco_data: give the `xlm prepare` directory that holds the xlco_pairs")
        prepared = PreparedData.open(ft.xlco_data)
        prepared.check_vocabulary(pretrained.vocab, pretrained.directory, "finetune.xlco_data")
        self.max_len = min(cfg.data.max_len, pretrained.info.config.max_positions) - 2
        self.samplers = []
        for i, e in enumerate(ft.xlco_pairs):
            a, b = e.split("-")
            if not prepared.has_para("train", a, b):
                raise ConfigError(f"finetune.xlco_pairs: {e!r} has no parallel training data in {ft.xlco_data}")
            rows = ft.xlco_batch_size
            sampler = PairBatcher(prepared.para("train", a, b), rows * (2 * self.max_len + 4), self.max_len,
                                  seed + 31 * (i + 1), rank, world, max_rows=rows)  # fmt: skip
            self.samplers.append((sampler, (pretrained.info.lang_id(a), pretrained.info.lang_id(b))))
        self.turn = 0

    def next_pairs(self) -> tuple[list[np.ndarray], list[np.ndarray], tuple[int, int]]:
        from xlm.data.batching import sentence_rows

        sampler, langs = self.samplers[self.turn % len(self.samplers)]
        self.turn += 1
        ids = sampler.next_ids()
        return (
            sentence_rows(sampler.data.src, ids, self.max_len),
            sentence_rows(sampler.data.tgt, ids, self.max_len),
            langs,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"turn": self.turn, "samplers": [s.state_dict() for s, _ in self.samplers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.turn = int(state["turn"])
        for (s, _), st in zip(self.samplers, state["samplers"]):
            s.load_state_dict(st)


def store_language_means(
    directory: Path, task: ClassifyTask, sets: list[EncodedSet], device: torch.device, max_tokens: int
) -> None:
    """Each language's mean pooled vector over ``sets``, added to the fine-tuned checkpoint."""
    from xlm.checkpoint_io import add_file_to_checkpoint

    sums: dict[int, tuple[Tensor, int]] = {}
    for s in sets:
        f = set_features(task.encoder, task.head, s.rows, s.lang_id, device, max_tokens)
        total, n = sums.get(s.lang_id, (torch.zeros(f.shape[1], device=f.device), 0))
        sums[s.lang_id] = (total + f.sum(0), n + len(s))
    id2lang = {i: lang for lang, i in task.pretrained.info.lang2id.items()}
    means = {id2lang[i]: (total / max(n, 1)).cpu().tolist() for i, (total, n) in sums.items()}
    counts = {id2lang[i]: n for i, (_, n) in sums.items()}
    data = json.dumps({"means": means, "examples": counts}, sort_keys=True).encode("utf-8")
    add_file_to_checkpoint(directory, LANGUAGE_MEANS, data)


def fresh_model(pretrained: Pretrained) -> Pretrained:
    """The same architecture, languages and vocabulary with newly initialised weights."""
    model = TransformerModel(pretrained.info.config)
    model.to(next(pretrained.model.parameters()).device)
    return Pretrained(model, pretrained.info, pretrained.vocab, pretrained.directory)


def summarize(results: dict[str, float]) -> dict[str, float]:
    """Per-language accuracies plus ``average`` (of the languages only)."""
    out = dict(results)
    values = [v for v in results.values() if not math.isnan(v)]
    out["average"] = float(np.mean(values)) if values else float("nan")
    return out


# --------------------------------------------------------------------------- fine-tuning run


@dataclass
class FinetuneResult:
    accuracy: dict[str, float]  # test language -> accuracy (%), and "average"
    examples: dict[str, int]  # test language -> number of examples
    valid: dict[str, float]  # the last evaluation's metrics
    labels: list[str]
    model_dir: Path  # the fine-tuned model that produced ``accuracy``
    is_main: bool = True  # False on the other processes of a torchrun job: they report nothing


def check_finetune_config(cfg: ClassifyConfig) -> None:
    """What a fine-tuning run needs from its config, checked before anything is loaded."""
    if not cfg.checkpoint:
        raise ConfigError("checkpoint: give the directory of a pretrained model")
    if not cfg.data.train:
        raise ConfigError("data.train: give at least one training file (--train en=FILE)")
    if cfg.finetune.epochs < 0:
        raise ConfigError(f"finetune.epochs must be >= 0 (0: automatic), got {cfg.finetune.epochs}")
    if cfg.optim.lr < 0 or cfg.finetune.head_lr < 0:
        raise ConfigError("optim.lr and finetune.head_lr must be >= 0 (0: automatic)")
    check_output_paths([cfg.output.json_file or None, cfg.output.plot_file or None])


@dataclass
class AutoSettings:
    """The settings that 0 in the config leaves to the model's size and the data's: passes over
    the training data and the learning rates of the encoder and the head."""

    epochs: int
    lr: float
    head_lr: float
    notes: list[str]  # each setting, and why it was chosen when it was

    @classmethod
    def resolve(cls, cfg: ClassifyConfig, per_epoch: int, emb_dim: int) -> AutoSettings:
        ft = cfg.finetune
        epochs = ft.epochs or auto_epochs(per_epoch, ft.min_updates)
        lr = cfg.optim.lr or auto_learning_rate(emb_dim)
        head_lr = ft.head_lr or AUTO_HEAD_LR_SCALE * lr
        notes = [
            f"encoder lr {lr:g}" + ("" if cfg.optim.lr else f" (auto: {emb_dim}-dim model)"),
            f"head lr {head_lr:g}" + ("" if ft.head_lr else " (auto)"),
            f"{epochs} epochs" + ("" if ft.epochs else f" (auto: at least {ft.min_updates} updates)"),
        ]
        return cls(epochs, lr, head_lr, notes)


def load_best_epoch(task: ClassifyTask, out: Path, trainer: Trainer) -> Path:
    """The fine-tuned model to test: ``best/``, loaded into ``task``, when the run kept one;
    else ``final/``, whose weights ``task`` holds already."""
    best = out / "best"
    if not (trainer.cfg.stopping_metric and trainer.best is not None and (best / LABELS_JSON).is_file()):
        return out / "final"
    task.encoder.load_state_dict(load_tensors(best / "model.safetensors"))
    task.head.load_state_dict(load_tensors(best / HEAD_WEIGHTS))
    return best


class _FinetuneRun:
    """The hooks that :func:`~xlm.training.runner.run_task` calls for one fine-tuning run, and
    what they hand each other: the labels, the encoded valid and test sets, the planned steps,
    the automatic settings and (on rank 0, once tested) the result."""

    def __init__(self, cfg: ClassifyConfig, log: Any):
        self.cfg, self.log = cfg, log
        self.labels: list[str] = []
        self.valid: list[EncodedSet] = []
        self.test: list[EncodedSet] = []
        self.per_epoch, self.steps = 0, 0
        self.auto: AutoSettings | None = None
        self.result: FinetuneResult | None = None

    def make_task(self, env: DistEnv) -> ClassifyTask:
        """The model (pretrained, or fresh with ``random_init``) and every split read and encoded."""
        cfg = self.cfg
        seed_everything(cfg.train.seed)  # the same head (and fresh encoder) on every process
        pretrained = load_pretrained(cfg.checkpoint)
        if cfg.finetune.random_init:
            pretrained = fresh_model(pretrained)
        train_sets, label2id = load_split(cfg.data, "train", pretrained, None)
        valid_sets, _ = load_split(cfg.data, "valid", pretrained, label2id)
        test_sets, _ = load_split(cfg.data, "test", pretrained, label2id)
        self.labels = list(label2id)
        train = encode_sets(train_sets, cfg.data, pretrained, label2id)
        self.valid = encode_sets(valid_sets, cfg.data, pretrained, label2id)
        self.test = encode_sets(test_sets, cfg.data, pretrained, label2id)
        for s in train_sets + valid_sets + test_sets if env.is_main else []:
            note = f" ({s.skipped} without a gold label skipped)" if s.skipped else ""
            self.log(f"{s.path} [{s.lang}]: {len(s)} examples{note}")
        return ClassifyTask(cfg, pretrained, self.labels, train, self.valid, cfg.train.seed, env.rank, env.world)

    def plan(self, task: ClassifyTask) -> TrainPlan:
        """Steps from the epochs (``train.max_steps`` caps them), an evaluation and a checkpoint
        per epoch unless told otherwise, and the learning rates."""
        tcfg = self.cfg.train
        self.per_epoch = task.steps_per_epoch()
        auto = self.auto = AutoSettings.resolve(self.cfg, self.per_epoch, task.pretrained.info.config.emb_dim)
        total = auto.epochs * self.per_epoch
        run_cfg = tcfg.model_copy(
            update={
                "max_steps": min(total, tcfg.max_steps) if tcfg.max_steps else total,
                "eval_every": tcfg.eval_every or self.per_epoch,
                "save_every": tcfg.save_every or self.per_epoch,
                "stopping_metric": tcfg.stopping_metric if self.valid else "",
            }
        )
        self.steps = run_cfg.max_steps
        # the head learns at its own rate; set_lr applies the scale every step
        return TrainPlan(run_cfg, self.cfg.optim.model_copy(update={"lr": auto.lr}), {"head": auto.head_lr / auto.lr})

    def describe(self, task: ClassifyTask, device: torch.device, env: DistEnv) -> str:
        init = "random initialisation" if self.cfg.finetune.random_init else self.cfg.checkpoint
        chosen = self.auto.notes if self.auto is not None else []
        return (
            f"classifier: {len(task.labels)} labels {task.labels}; encoder from {init}; "
            f"{self.per_epoch} batches per epoch, {self.steps} steps; device {device}\n"
            "fine-tuning: " + "; ".join(chosen)
        )

    def evaluate_tests(self, task: ClassifyTask, out: Path, trainer: Trainer) -> None:
        """The end hook, on rank 0: the best epoch (else the last) on every test set."""
        data, ft = self.cfg.data, self.cfg.finetune
        model_dir = load_best_epoch(task, out, trainer)
        task.encoder.eval()
        task.head.eval()
        accuracy: dict[str, float] = {}
        examples: dict[str, int] = {}
        for s in self.test:
            accuracy[s.lang], _ = evaluate_set(task.encoder, task.head, s, trainer.device, data.max_tokens, ft.center)
            examples[s.lang] = len(s)
        if ft.center:  # what `xlm classify` subtracts from a language's inputs
            store_language_means(model_dir, task, self.valid + self.test, trainer.device, data.max_tokens)
        self.result = FinetuneResult(summarize(accuracy) if accuracy else {}, examples, {}, task.labels, model_dir)


def run_finetune(cfg: ClassifyConfig, resume: str | None = None, log: Any = status) -> FinetuneResult:
    """Fine-tune ``cfg.checkpoint`` (or a fresh model of its shape) on the training files,
    keep the best epoch by valid accuracy, and measure accuracy on every test file. Runs
    through :func:`~xlm.training.runner.run_task` (used-folder check, resume, devices); the
    test sets are evaluated by its end hook, so an interrupted run never reaches them."""
    check_finetune_config(cfg)
    run = _FinetuneRun(cfg, log)
    end, plan = run.evaluate_tests, run.plan
    valid_metrics = run_task(cfg, run.make_task, run.describe, resume, on_end=end, plan=plan, log=log)
    if run.result is None:  # another process of a torchrun job: rank 0 reports
        return FinetuneResult({}, {}, valid_metrics, run.labels, Path(cfg.train.out_dir) / "final", False)
    run.result.valid = valid_metrics
    return run.result


# --------------------------------------------------------------------------- translate-test


def translate_examples(
    data: ExampleSet, mt_checkpoint: str | Path, target: str, device: torch.device | str, log: Any = status
) -> ExampleSet:
    """The examples of ``data`` translated into ``target`` with a translation checkpoint
    (both sides of a pair; decoding as recorded with the checkpoint), now of language ``target``."""
    from xlm.model.generation import DecodeConfig, translate_text
    from xlm.model.seq2seq import load_translator

    tr = load_translator(mt_checkpoint, device)
    decode = DecodeConfig.from_json(tr.info.extra.get("decode"))
    texts = [e.text for e in data.examples] + [e.text_b for e in data.examples if e.text_b is not None]
    out, n_long = translate_text(tr, texts, data.lang, target, decode, device)
    if n_long:
        log(
            f"{data.path}: {n_long} text(s) longer than {mt_checkpoint}'s positions: their first tokens were translated"
        )
    first, second = iter(out[: len(data.examples)]), iter(out[len(data.examples) :])
    examples = [
        Example(e.label, next(first), next(second) if e.text_b is not None else None, e.source, e.line)
        for e in data.examples
    ]
    return ExampleSet(target, data.path, examples, data.skipped)


def classifier_accuracy(clf: Classifier, data: ExampleSet, max_len: int = 256) -> float:
    """Accuracy (%) of a fine-tuned classifier on raw-text examples of one of its languages."""
    label2id = {label: i for i, label in enumerate(clf.labels)}
    for e in data.examples:
        if e.label not in label2id:
            raise DataError(f"{e.where}: label {e.label!r} is not one of the classifier's {clf.labels}")
    encode = text_encoder(clf.pretrained.directory, data.lang, clf.info.lowercase_and_remove_accent, False)
    ids_a = encode([e.text for e in data.examples])
    ids_b = iter(encode([e.text_b for e in data.examples if e.text_b is not None]))
    limit = min(max_len, clf.info.config.max_positions)
    rows = [build_row(a, next(ids_b) if e.text_b is not None else None, limit) for e, a in zip(data.examples, ids_a)]
    probs = clf.predict_probs(rows, data.lang)
    gold = np.asarray([label2id[e.label] for e in data.examples])
    return 100.0 * float((probs.argmax(-1) == gold).mean()) if len(gold) else float("nan")


def translate_test(
    classifier: str | Path,
    mt_checkpoint: str | Path,
    test: dict[str, str],
    fmt: str = "tsv",
    device: str = "auto",
    max_len: int = 256,
    log: Any = status,
) -> dict[str, float]:
    """The paper's translate-test: each test set (``language -> file``) other than the
    classifier's fine-tuning language translated into that language by ``mt_checkpoint`` and
    classified (``max_len`` tokens per example, as the zero-shot evaluation). Returns the
    accuracy (%) per language and their average."""
    dev = pick_device(device)
    clf = load_classifier(classifier, dev)
    target = translate_test_target(clf)
    accuracy: dict[str, float] = {}
    for lang, path in test.items():
        if lang == target:
            continue
        data = read_examples(path, lang, fmt)
        accuracy[lang] = classifier_accuracy(clf, translate_examples(data, mt_checkpoint, target, dev, log), max_len)
    return summarize(accuracy) if accuracy else {}
