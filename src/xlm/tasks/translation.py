"""Machine translation from a pretrained XLM: supervised MT, denoising auto-encoding and
online back-translation, written the way users of the original XLM write them::

    [objectives]
    mt = ["en-fr", "fr-en"]          # supervised, on parallel data
    ae = ["en", "fr"]                # denoising auto-encoding (monolingual)
    bt = ["en-fr-en", "fr-en-fr"]    # en -> fr by the current model, then learn fr -> en
    ae_weight = "0:1,100000:0.1"     # a weight, or a piecewise-linear schedule over steps

Each optimizer step trains one of the steps with a non-zero weight, in turn (as the original
performs one update per step kind). The model, evaluation (BLEU per direction and split),
checkpoints, resume and ``torchrun`` come from :class:`~xlm.training.trainer.Trainer`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import field_validator
from torch import nn

from xlm.config import Config, ConfigError, Count, NonNegative, NonNegativeInt, Rate
from xlm.data.batching import PairBatcher, dropped_report, sentence_rows
from xlm.data.dataset import ParallelData, PreparedData, empty_split_error
from xlm.evaluation.bleu import raw_reference_path, translate_and_score
from xlm.evaluation.perplexity import perplexity
from xlm.model.generation import DECODE_KEYS, DecodeConfig, generate
from xlm.model.pretrained import load_pretrained, write_model_files
from xlm.model.seq2seq import EncoderDecoder, LoadReport, init_from_pretrained, model_info, objective_directions
from xlm.model.transformer import ModelConfig
from xlm.objectives.translation import (
    NoiseConfig,
    PairBatch,
    add_noise_rows,
    make_pair_batch,
    smoothing_excluded,
    translation_loss,
)
from xlm.reports import write_atomic
from xlm.text.tokenizer import Tokenizer, load_tokenizer
from xlm.text.vocab import MASK_INDEX
from xlm.training.distributed import DistEnv
from xlm.training.optim import OptimConfig
from xlm.training.runner import run_task
from xlm.training.trainer import StepOutput, TrainConfig, TrainingError

# --------------------------------------------------------------------------- weight schedules


def parse_schedule(value: float | str) -> list[tuple[int, float]]:
    """``1.0`` or ``"0.5"`` -> constant; ``"0:1,100000:0.1"`` -> (step, weight) points, linear
    in between and constant outside (the original's ``lambda_*`` syntax)."""
    if isinstance(value, (int, float)):
        return _constant_weight(float(value))
    text = value.strip()
    if ":" not in text:
        try:
            weight = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is neither a weight nor a schedule like '0:1,100000:0.1'") from None
        return _constant_weight(weight)
    points = []
    for part in text.split(","):
        try:
            step_text, weight_text = part.split(":")
            points.append((int(step_text), float(weight_text)))
        except ValueError:
            raise ValueError(f"{part!r} in {value!r} is not 'step:weight'") from None
    if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
        raise ValueError(f"schedule {value!r}: steps must increase")
    if any(not w >= 0 or math.isinf(w) for _, w in points):
        raise ValueError(f"schedule {value!r}: weights must be >= 0")
    return points


def _constant_weight(weight: float) -> list[tuple[int, float]]:
    if not 0 <= weight < math.inf:
        raise ValueError("must be a weight within [0, inf), or a schedule like '0:1,100000:0.1'")
    return [(0, weight)]


def schedule_value(points: list[tuple[int, float]], step: int) -> float:
    if step <= points[0][0]:
        return points[0][1]
    for (s0, w0), (s1, w1) in zip(points, points[1:]):
        if s0 <= step < s1:
            return w0 + (w1 - w0) * (step - s0) / (s1 - s0)
    return points[-1][1]


# --------------------------------------------------------------------------- configuration


class MTDataConfig(Config):
    path: str = "runs/demo/data"  # a directory written by `xlm prepare`
    max_tokens: Count = 3000  # token budget of a batch: source + target rows, padded
    max_len: Count = 100  # longest sentence trained on, in words: longer training pairs are dropped


class MTModelConfig(ModelConfig):
    """The encoder's sizes (ignored, but for dropout, when initialising from a pretrained
    model, whose sizes are used), plus the decoder's depth and embedding sharing."""

    decoder_layers: NonNegativeInt = 0  # 0: as many as the encoder
    share_embeddings: bool = False  # one embedding matrix for encoder and decoder

    def encoder_config(self) -> ModelConfig:
        return ModelConfig.model_validate(self.model_dump(exclude={"decoder_layers", "share_embeddings"}))


class InitConfig(Config):
    pretrained: str = ""  # an `xlm pretrain` checkpoint (e.g. runs/demo/best); empty: random init
    encoder: bool = True  # initialise the encoder from it
    decoder: bool = True  # initialise the decoder from it (cross-attention stays new)


def _direction(entry: str, n: int) -> list[str]:
    parts = entry.split("-")
    if len(parts) != n or not all(parts):
        raise ValueError(f"{entry!r} is not of the form {'-'.join(['xx', 'yy', 'xx'][:n])}")
    return parts


class MTObjectivesConfig(Config):
    mt: list[str] = []  # "src-tgt": supervised on parallel data
    ae: list[str] = []  # "lang": denoising auto-encoding
    bt: list[str] = []  # "a-b-a": a translated to b by the model, learn b -> a
    mt_weight: float | str = 1.0
    ae_weight: float | str = 1.0
    bt_weight: float | str = 1.0
    word_shuffle: NonNegative = 3.0
    word_dropout: Rate = 0.1
    word_blank: Rate = 0.1
    bt_max_len_a: NonNegative = 1.3  # back-translations are at most a * L + b tokens
    bt_max_len_b: NonNegativeInt = 5
    label_smoothing: Rate = 0.0

    @field_validator("mt")
    @classmethod
    def _mt(cls, v: list[str]) -> list[str]:
        for e in v:
            a, b = _direction(e, 2)
            if a == b:
                raise ValueError(f"{e!r}: source and target must differ (use ae for auto-encoding)")
        return v

    @field_validator("bt")
    @classmethod
    def _bt(cls, v: list[str]) -> list[str]:
        for e in v:
            a, b, c = _direction(e, 3)
            if a != c or a == b:
                raise ValueError(f"{e!r}: back-translation goes a-b-a with a != b (e.g. 'en-fr-en')")
        return v

    @field_validator("mt_weight", "ae_weight", "bt_weight")
    @classmethod
    def _weight(cls, v: float | str) -> float | str:
        parse_schedule(v)
        return v

    def noise(self, blank_index: int = MASK_INDEX) -> NoiseConfig:
        """The denoising auto-encoder's corruption (blanks are the vocabulary's mask id)."""
        return NoiseConfig(
            word_shuffle=self.word_shuffle, word_dropout=self.word_dropout, word_blank=self.word_blank,
            blank_index=blank_index,
        )  # fmt: skip


class MTEvalConfig(Config):
    splits: list[str] = ["valid", "test"]
    directions: list[str] = []  # empty: every direction that is trained (mt, and both hops of bt)
    max_sentences: NonNegativeInt = 500  # per direction and split; 0: all
    beam_size: Count = 1
    length_penalty: float = 1.0  # any finite value (scores are log p / length**this)
    early_stopping: bool = False
    max_len_a: NonNegative = 1.5
    max_len_b: NonNegativeInt = 10
    save_hypotheses: bool = True  # write OUT/hypotheses/{split}.{src}-{tgt}.txt at each evaluation

    def decode(self) -> DecodeConfig:
        """The decoding setting of evaluation, recorded with every checkpoint (``extra.decode``)
        and used by ``xlm evaluate bleu`` and ``xlm translate`` unless told otherwise."""
        return DecodeConfig(**{k: getattr(self, k) for k in DECODE_KEYS})


class MTConfig(Config):
    data: MTDataConfig = MTDataConfig()
    model: MTModelConfig = MTModelConfig()
    init: InitConfig = InitConfig()
    objectives: MTObjectivesConfig = MTObjectivesConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig(out_dir="runs/mt")
    eval: MTEvalConfig = MTEvalConfig()


# --------------------------------------------------------------------------- the task


@dataclass
class _Step:
    """One training step kind on one direction or language, with its batcher."""

    kind: str  # "mt", "ae" or "bt"
    name: str  # e.g. "mt/en-fr"
    langs: tuple[str, ...]
    batcher: PairBatcher
    schedule: list[tuple[int, float]]


def eval_directions(cfg: MTConfig) -> list[tuple[str, str]]:
    if cfg.eval.directions:
        return [(a, b) for a, b in (_direction(d, 2) for d in cfg.eval.directions)]
    return objective_directions(cfg.objectives.mt, cfg.objectives.bt)


class MTTask:
    """Implements the trainer's Task protocol for supervised and unsupervised MT."""

    def __init__(self, cfg: MTConfig, seed: int, rank: int = 0, world: int = 1, log: Any = print):
        self.cfg = cfg
        obj = cfg.objectives
        if not (obj.mt or obj.ae or obj.bt):
            raise ConfigError("objectives: at least one of mt / ae / bt must list a direction or language")
        self.prepared = PreparedData.open(cfg.data.path)
        self.lowercase = bool(self.prepared.info.get("lowercase_and_remove_accent", False))
        self.report: LoadReport | None = None
        needed = {p for e in obj.mt + obj.ae + obj.bt for p in e.split("-")}
        needed |= {p for d in eval_directions(cfg) for p in d}
        if cfg.init.pretrained:
            pre = load_pretrained(cfg.init.pretrained)
            self.prepared.check_vocabulary(pre.vocab, cfg.init.pretrained, "data.path")
            self.lang2id = dict(pre.info.lang2id)
            keep = {"dropout": cfg.model.dropout, "attention_dropout": cfg.model.attention_dropout}
            model_cfg = pre.info.config.model_copy(update=keep)
        else:
            langs = self.prepared.languages or sorted(needed)
            self.lang2id = {lang: i for i, lang in enumerate(langs)}
            model_cfg = cfg.model.encoder_config().model_copy(
                update={
                    "vocab_size": len(self.prepared.vocab),
                    "n_langs": len(langs),
                    "pad_index": self.prepared.vocab.specials.pad,
                }
            )
        for lang in sorted(needed):
            if lang not in self.lang2id:
                where = cfg.init.pretrained or cfg.data.path
                raise ConfigError(f"objectives/eval: language {lang!r} is not one of {where}'s {sorted(self.lang2id)}")
        if cfg.data.max_len + 2 > model_cfg.max_positions:
            raise ConfigError(
                f"data.max_len={cfg.data.max_len} + 2 exceeds the model's max_positions={model_cfg.max_positions}"
            )
        for split in cfg.eval.splits:  # an empty evaluated split: refused now, not at the first evaluation
            for a, b in eval_directions(cfg):
                if self.prepared.has_para(split, a, b) and len(self.prepared.para(split, a, b)) == 0:
                    raise empty_split_error(self.prepared.para_prefix(split, a, b, a), split, f"{a}-{b}")
        self._check_stopping_metric()
        self.log = log
        self._noted: set[str] = set()
        self.model_cfg = model_cfg
        self.model = EncoderDecoder(model_cfg, cfg.model.decoder_layers, cfg.model.share_embeddings)
        if cfg.init.pretrained:
            self.report = init_from_pretrained(self.model, pre, cfg.init.encoder, cfg.init.decoder)
            log(self.report.summary())
        self.forward_model: nn.Module = self.model
        self.device = torch.device("cpu")
        self.noise = obj.noise(blank_index=self.prepared.vocab.specials.mask)
        self.pad = self.prepared.vocab.specials.pad
        self.steps = self._build_steps(seed, rank, world)
        self.noise_rng = np.random.default_rng([seed, rank, 23])
        self._tokenizer: Tokenizer | None = None

    def _check_stopping_metric(self) -> None:
        """BLEU against raw references (``{split}/bleu...``) needs the raw text kept by ``xlm prepare``."""
        name = self.cfg.train.stopping_metric
        parts = name.split("/")
        if len(parts) < 2 or parts[1] != "bleu":
            return
        split = parts[0]
        directions = [tuple(parts[2].split("-"))] if len(parts) > 2 else eval_directions(self.cfg)
        for a, b in directions:
            if (
                self.prepared.has_para(split, a, b)
                and not raw_reference_path(self.prepared.directory, split, a, b).is_file()
            ):
                raise ConfigError(
                    f"train.stopping_metric {name!r} is BLEU against the raw {split} references, which "
                    f"{self.cfg.data.path} does not keep ({RAW_NOTE}): run `xlm prepare` again, or stop on "
                    f"{name.replace('/bleu', '/bleu_norm', 1)!r} (BLEU against the normalized references)"
                )

    def _build_steps(self, seed: int, rank: int, world: int) -> list[_Step]:
        obj, d = self.cfg.objectives, self.cfg.data
        steps: list[_Step] = []

        def batcher(data: ParallelData, k: int) -> PairBatcher:
            return PairBatcher(data, d.max_tokens, d.max_len, seed + 7919 * (k + 1), rank, world)

        def mono(lang: str, field_name: str) -> ParallelData:
            if not self.prepared.has_mono("train", lang):
                raise ConfigError(f"{field_name}: no monolingual train.{lang} in {d.path}")
            data = self.prepared.mono("train", lang)
            return ParallelData(data, data)  # a sentence paired with itself: batched like pairs

        for e in obj.mt:
            a, b = e.split("-")
            if not self.prepared.has_para("train", a, b):
                raise ConfigError(f"objectives.mt: no parallel train.{'-'.join(sorted((a, b)))} in {d.path}")
            data = self.prepared.para("train", a, b)
            steps.append(_Step("mt", f"mt/{e}", (a, b), batcher(data, len(steps)), parse_schedule(obj.mt_weight)))
        for lang in obj.ae:
            data = mono(lang, "objectives.ae")
            steps.append(_Step("ae", f"ae/{lang}", (lang,), batcher(data, len(steps)), parse_schedule(obj.ae_weight)))
        for e in obj.bt:
            a, b, _ = e.split("-")
            data = mono(a, "objectives.bt")
            steps.append(_Step("bt", f"bt/{e}", (a, b), batcher(data, len(steps)), parse_schedule(obj.bt_weight)))
        return steps

    def startup_report(self) -> list[str]:
        """One line per training file: the pairs (or, for ae/bt, sentences) dropped for being
        longer than ``data.max_len`` words (they are dropped, not cut)."""
        lines: dict[tuple[str, ...], str] = {}
        for s in self.steps:
            data = s.batcher.data
            key = tuple(sorted((str(data.src.prefix), str(data.tgt.prefix))))  # en-fr and fr-en: one file
            if key not in lines:
                name = s.langs[0] if data.src is data.tgt else "-".join(sorted(s.langs))
                lines[key] = dropped_report(name, data, self.cfg.data.max_len)
        return list(lines.values())

    # --- Task protocol --------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def bind(self, wrapped: dict[str, nn.Module], device: torch.device) -> None:
        self.forward_model, self.device = wrapped["model"], device

    def weights(self, step: int) -> dict[str, float]:
        return {s.name: schedule_value(s.schedule, step) for s in self.steps}

    def _rows(self, data: Any, ids: np.ndarray) -> list[np.ndarray]:
        return sentence_rows(data, ids, self.cfg.data.max_len)

    def _back_translate(self, rows: list[np.ndarray], src: str, tgt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy translation of ``rows`` (language ``src``) into ``tgt`` by the current model,
        without gradients and without dropout."""
        obj = self.cfg.objectives
        batch = make_pair_batch(rows, rows, self.lang2id[src], self.lang2id[src], self.pad).to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            # one length limit per batch, from its longest sentence, as the original back-translates
            decode = DecodeConfig(
                beam_size=1, max_len_a=obj.bt_max_len_a, max_len_b=obj.bt_max_len_b, sentence_limits=False
            )
            tokens, lengths = generate(
                self.model, batch.src, batch.src_lengths, self.lang2id[src], self.lang2id[tgt], decode,
                self.prepared.vocab.specials,
            )  # fmt: skip
        finally:
            self.model.train(was_training)
        return tokens, lengths

    def make_batch(self, step: _Step) -> PairBatch:
        """The next batch of a step, on the training device."""
        ids = step.batcher.next_ids()
        data = step.batcher.data
        if step.kind == "mt":
            a, b = step.langs
            batch = make_pair_batch(
                self._rows(data.src, ids), self._rows(data.tgt, ids), self.lang2id[a], self.lang2id[b], self.pad
            )
            return batch.to(self.device)
        rows = self._rows(data.src, ids)
        if step.kind == "ae":
            lid = self.lang2id[step.langs[0]]
            return make_pair_batch(add_noise_rows(rows, self.noise, self.noise_rng), rows, lid, lid, self.pad).to(
                self.device
            )
        a, b = step.langs
        src, src_len = self._back_translate(rows, a, b)
        target = make_pair_batch(rows, rows, self.lang2id[a], self.lang2id[a], self.pad).to(self.device)
        return PairBatch(src, src_len, self.lang2id[b], target.tgt, target.tgt_lengths, self.lang2id[a])

    def train_batch(self, micro_step: int) -> StepOutput:
        update = micro_step // max(1, self.cfg.optim.accumulate)
        weights = self.weights(update)
        active = [s for s in self.steps if weights[s.name] > 0]
        if not active:
            raise TrainingError(f"every objective has weight 0 at step {update}: check the *_weight schedules")
        step = active[update % len(active)]  # the micro-batches of one update: one step kind
        batch = self.make_batch(step)
        out = translation_loss(
            self.forward_model, batch, self.cfg.objectives.label_smoothing, smoothing_excluded(self.prepared.vocab)
        )
        return StepOutput(out.loss, step.name, batch.n_tokens, {"acc": out.accuracy}, weights[step.name], out.n_pred)

    def state_dict(self) -> dict[str, Any]:
        return {
            "batchers": {s.name: s.batcher.state_dict() for s in self.steps},
            "noise_rng": self.noise_rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s in self.steps:
            s.batcher.load_state_dict(state["batchers"][s.name])
        self.noise_rng.bit_generator.state = state["noise_rng"]

    def write_model_files(self, directory: Path) -> None:
        obj = self.cfg.objectives
        extra: dict[str, Any] = {"objectives": {"mt": obj.mt, "ae": obj.ae, "bt": obj.bt}}
        # one evaluation per checkpoint: `xlm evaluate bleu` and `xlm translate` decode like this
        extra["decode"] = self.cfg.eval.decode().to_json()
        extra["eval_directions"] = [f"{a}-{b}" for a, b in eval_directions(self.cfg)]
        if self.report is not None:
            extra["initialised_from"] = self.report.source
        info = model_info(self.model_cfg, self.lang2id, self.lowercase, self.model, **extra)
        write_model_files(directory, self.model, info, self.prepared.directory)

    # --- evaluation -------------------------------------------------------------------
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.prepared.directory)
        return self._tokenizer

    def evaluate(self) -> dict[str, float]:
        """Per split and direction, BLEU of the decoded outputs (whole sources, up to the
        model's positions): ``{split}/bleu/{a}-{b}`` against the raw references (when the
        prepared folder keeps them), ``{split}/bleu_norm/{a}-{b}`` against the normalized ones,
        tokenized ``{split}/bleu_tok/{a}-{b}`` (multi-bleu.perl's rules), and the teacher-forced
        perplexity ``{split}/ppl/{a}-{b}``; means over directions ``{split}/bleu`` (when every
        direction has raw references) and ``{split}/bleu_norm``."""
        ev, d = self.cfg.eval, self.cfg.data
        decode = ev.decode()
        metrics: dict[str, float] = {}
        for split in ev.splits:
            for a, b in eval_directions(self.cfg):
                if not self.prepared.has_para(split, a, b):
                    continue
                data = self.prepared.para(split, a, b)
                name = f"{a}-{b}"
                out = translate_and_score(
                    self.model,
                    data,
                    self.lang2id[a],
                    self.lang2id[b],
                    b,
                    self.tokenizer(),
                    decode,
                    self.device,
                    ev.max_sentences,
                    d.max_tokens,
                    raw_reference_path(self.prepared.directory, split, a, b),
                )
                for key, value in out.scores().items():
                    metrics[f"{split}/{key}/{name}"] = value
                metrics[f"{split}/ppl/{name}"] = self._perplexity(data, a, b, len(out.hyp))
                self._note_once(f"{split} {name}", out.long_note(f"{split} {name}"))
                if out.ref_raw is None:
                    self._note_once(split, f"{split} {name}: no raw references in {d.path} ({RAW_NOTE}): "
                                    "BLEU only against the normalized references (bleu_norm)")  # fmt: skip
                if ev.save_hypotheses:
                    folder = Path(self.cfg.train.out_dir) / "hypotheses"
                    write_atomic(folder / f"{split}.{name}.txt", "".join(h + "\n" for h in out.hyp))
            metrics.update(_direction_means(metrics, split))
        return metrics

    def _note_once(self, key: str, text: str) -> None:
        if text and key not in self._noted:
            self._noted.add(key)
            self.log(text)

    def _perplexity(self, data: ParallelData, a: str, b: str, n: int, batch_rows: int = 32) -> float:
        """Teacher-forced perplexity of the first ``n`` pairs, whole (only training drops
        over-long pairs); a side beyond the model's positions is cut to fit them."""
        fit = self.model_cfg.max_positions - 2
        total, count = 0.0, 0
        for i in range(0, n, batch_rows):
            ids = np.arange(i, min(n, i + batch_rows))
            src, tgt = sentence_rows(data.src, ids, fit), sentence_rows(data.tgt, ids, fit)
            batch = make_pair_batch(src, tgt, self.lang2id[a], self.lang2id[b], self.pad)
            out = translation_loss(self.model, batch.to(self.device))
            total += float(out.loss) * out.n_pred
            count += out.n_pred
        return perplexity(total / max(count, 1))


RAW_NOTE = "folders prepared before xlm kept raw valid/test text"


def _direction_means(metrics: dict[str, float], split: str) -> dict[str, float]:
    """``{split}/bleu_norm``, and ``{split}/bleu`` when every direction has raw references."""
    out: dict[str, float] = {}
    norm = [v for k, v in metrics.items() if k.startswith(f"{split}/bleu_norm/")]
    raw = [v for k, v in metrics.items() if k.startswith(f"{split}/bleu/")]
    if norm:
        out[f"{split}/bleu_norm"] = float(np.mean(norm))
    if raw and len(raw) == len(norm):
        out[f"{split}/bleu"] = float(np.mean(raw))
    return out


# --------------------------------------------------------------------------- running


def run_mt_training(cfg: MTConfig, resume: str | None = None) -> dict[str, float]:
    """Train with ``cfg``; ``resume`` is None, "latest" or a checkpoint path. One process, or
    one per device under ``torchrun``."""

    def make(env: DistEnv) -> MTTask:
        log = print if env.is_main else (lambda *a, **k: None)
        return MTTask(cfg, cfg.train.seed, env.rank, env.world, log)

    def on_start(task: MTTask, out: Path) -> None:
        if task.report is not None:
            write_atomic(out / "init_report.json", json.dumps(task.report.to_json(), indent=1))

    def describe(task: MTTask, device: torch.device, env: DistEnv) -> str:
        n = task.model.num_parameters()
        steps = ", ".join(s.name for s in task.steps)
        return "\n".join(
            [
                f"model: {n / 1e6:.2f}M parameters; steps {steps}; languages {task.lang2id}; device {device}; "
                f"processes {env.world}",
                *task.startup_report(),
            ]
        )

    return run_task(cfg, make, describe, resume, on_start)
