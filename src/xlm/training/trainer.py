"""One linear, device-agnostic training loop shared by pretraining, fine-tuning and MT.

What is trained is a :class:`Task`: it owns the modules, reads its own batches and computes
the loss of one batch. The trainer owns the rest: optimizer and LR schedule, gradient
accumulation and clipping, mixed precision, DDP, non-finite steps, logging (progress bar,
JSON lines, TensorBoard), periodic evaluation, best-checkpoint selection, early stopping,
checkpoints and exact resume, and a clean stop on SIGTERM/SIGINT: the step finishes, a
checkpoint is saved, then :class:`~xlm.errors.Interrupted` is raised (the CLI exits 128 + N).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from xlm import checkpoint_io as ckpt
from xlm.config import Config, Count, NonNegative, NonNegativeInt
from xlm.devices import DeviceName
from xlm.errors import Interrupted, XLMError
from xlm.fileio import finite_json, status, write_atomic, write_json
from xlm.model.precision import native_bf16
from xlm.training.checkpoint import optimizer_from_tensors, optimizer_to_tensors
from xlm.training.distributed import DistEnv, barrier, gather_objects, wrap_ddp
from xlm.training.optim import OptimConfig, build_optimizer, learning_rate, set_lr

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

TRAIN_STATE_JSON = "train_state.json"
TRAIN_STATE_TENSORS = "train_state.safetensors"
METRICS = "metrics.jsonl"


class TrainingError(XLMError):
    """Training cannot go on (e.g. too many non-finite steps in a row)."""


class TrainConfig(Config):
    out_dir: str = "runs/pretrain"
    max_steps: NonNegativeInt = 1000
    max_minutes: NonNegative = 0.0  # wall-clock budget of this invocation; 0: none (stops at a step boundary, saved)
    seed: NonNegativeInt = 0
    device: DeviceName = "auto"  # auto, cpu, cuda, cuda:N or mps
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    log_every: Count = 10  # a train record every N updates, averaging the updates since the last one
    eval_every: NonNegativeInt = 500  # 0: only at the end
    save_every: NonNegativeInt = 500  # 0: only at the end
    keep_last: NonNegativeInt = 3  # newest checkpoints kept (and the newest intact one); 0: all
    stopping_metric: str = ""  # e.g. "valid/mlm/ppl"; empty: no best checkpoint / early stopping
    stopping_mode: Literal["min", "max"] = "min"
    patience: NonNegativeInt = 0  # evaluations without improvement before stopping; 0: never stop early
    max_nonfinite: NonNegativeInt = 5  # consecutive non-finite steps tolerated before stopping
    eval_at_start: bool = True
    progress: bool = True  # a progress bar on standard error, when it is a terminal
    tensorboard: bool | None = None  # None: when installed; true: asked for (a note when missing); false: off
    threads: NonNegativeInt = 0  # torch intra-op threads; 0 leaves torch's default


@dataclass
class StepOutput:
    loss: Tensor
    name: str  # e.g. "mlm/en" or "tlm/en-fr"
    n_tokens: int
    stats: dict[str, float] = field(default_factory=dict)
    weight: float = 1.0  # the objective's weight: scales the gradient, not the logged loss
    n_pred: int = 0  # tokens predicted: weights the micro-batches of one update (0: equal weights)


@dataclass
class LogWindow:
    """The updates since the last train record: each objective's mean loss over the updates
    that trained it, and tokens per second over all of them. (One update's losses alone would
    show only the objectives whose turn falls on the logged step.) Saved in checkpoints, so a
    resumed run writes the same records."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0

    def add(self, losses: dict[str, float], n_tokens: int, seconds: float) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.tokens += n_tokens
        self.seconds += seconds

    def fields(self) -> dict[str, Any]:
        return {"tokens_per_s": self.tokens / max(self.seconds, 1e-9),
                **{f"loss/{k}": self.sums[k] / self.counts[k] for k in sorted(self.sums)}}  # fmt: skip

    def state(self) -> dict[str, Any]:
        return {"sums": self.sums, "counts": self.counts, "tokens": self.tokens, "seconds": self.seconds}


class Task(Protocol):
    def modules(self) -> dict[str, nn.Module]: ...
    def bind(self, wrapped: dict[str, nn.Module], device: torch.device) -> None: ...
    def train_batch(self, micro_step: int) -> StepOutput: ...
    def evaluate(self) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def write_model_files(self, directory: Path) -> None: ...


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for fp32. 'auto' uses bf16 on CUDA GPUs that support it and
    fp32 on CPU; 'bf16' on a CPU is fast only with AMX (see ``xlm.model.precision``)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _rng_tensors(device: torch.device) -> dict[str, Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["rng.cuda"] = torch.cuda.get_rng_state(device)
    return out


class _StopFlag:
    """Remembers SIGTERM/SIGINT so that the loop can save and exit at a step boundary."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    def __init__(
        self,
        task: Task,
        train_cfg: TrainConfig,
        optim_cfg: OptimConfig,
        env: DistEnv,
        device: torch.device,
        config_dump: dict[str, Any] | None = None,
        log: Any = status,
        lr_scale: dict[str, float] | None = None,
    ):
        """``lr_scale`` multiplies the learning rate of named modules (e.g. a fine-tuning head)."""
        self.task, self.cfg, self.optim_cfg, self.env, self.device = task, train_cfg, optim_cfg, env, device
        self.config_dump = config_dump or {}
        self.log = log if env.is_main else (lambda *a, **k: None)
        self.out_dir = Path(train_cfg.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.modules = task.modules()
        for m in self.modules.values():
            m.to(device)
        self.wrapped = {k: wrap_ddp(m, env, device) for k, m in self.modules.items()}
        task.bind(self.wrapped, device)
        names = list(self.modules)
        scales = {names.index(k): v for k, v in lr_scale.items()} if lr_scale else None
        self.optimizer = build_optimizer(list(self.modules.values()), optim_cfg, scales)
        self.amp_dtype = resolve_precision(train_cfg.precision, device)
        if self.amp_dtype == torch.bfloat16 and not native_bf16(device):
            self.log(
                f"warning: precision bf16 on {device}, which has no native bf16 matrix multiply (slower than fp32)"
            )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.best: float | None = None
        self.bad_evals = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.tokens_seen = 0
        self.train_seconds = 0.0  # wall-clock time spent in training steps (not evaluation or saving)
        self.window = LogWindow()
        self.tb: SummaryWriter | None = None

    # ------------------------------------------------------------------ checkpoints
    def _state_json(self, sampler_states: list[Any]) -> dict[str, Any]:
        _, optim_meta = optimizer_to_tensors(self.optimizer)
        return {
            "step": self.step,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "nonfinite_total": self.nonfinite_total,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
            "log_window": self.window.state(),
            "optimizer": optim_meta,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "task_states": sampler_states,
            "world_size": self.env.world,
            "config": self.config_dump,
        }

    def save(self, directory: Path | None = None, with_train_state: bool = True) -> Path | None:
        """Checkpoint (every rank takes part in gathering states; rank 0 writes)."""
        task_states = gather_objects(self.task.state_dict(), self.env)
        rngs = gather_objects({k: v.tolist() for k, v in _rng_tensors(self.device).items()}, self.env)
        target = directory or self.ckpt_dir / f"step-{self.step:08d}"
        if self.env.is_main:

            def write(tmp: Path) -> None:
                self.task.write_model_files(tmp)
                if with_train_state:
                    for name, module in self.modules.items():  # those the model files leave out (resume reads all)
                        if not (tmp / f"{name}.safetensors").exists():
                            save_file(ckpt.state_dict_for_saving(module), str(tmp / f"{name}.safetensors"))
                    tensors, _ = optimizer_to_tensors(self.optimizer)
                    for r, rng in enumerate(rngs):
                        for k, v in rng.items():
                            tensors[f"{k}.rank{r}"] = torch.tensor(v, dtype=torch.uint8)
                    save_file(tensors, str(tmp / TRAIN_STATE_TENSORS))
                    write_json(tmp / TRAIN_STATE_JSON, self._state_json(task_states))

            ckpt.save_checkpoint(target, write, {"step": self.step})
            if directory is None:
                ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.keep_last, self.log)
        barrier(self.env)
        return target

    def resume(self, directory: Path | None = None) -> bool:
        """Load the given checkpoint, or the newest intact one of this run. False if none."""
        if self.env.is_main:  # half-written checkpoints of a killed run (never visible as checkpoints)
            for folder in (self.ckpt_dir, self.out_dir):
                ckpt.remove_stale_temporaries(folder, self.log)
        if directory is None:
            directory = ckpt.latest_intact(self.ckpt_dir, self.log)
            if directory is None:
                if self.env.is_main:  # starting over: the log of a lost run does not describe this one
                    self._truncate_metrics(-1)
                return False
            newest = ckpt.list_checkpoints(self.ckpt_dir)[-1]
            if newest != directory:
                self.log(f"resuming from {directory.name}: the newer {newest.name} is damaged")
        else:
            ckpt.verify_checkpoint(directory)
        state = ckpt.read_json(directory / TRAIN_STATE_JSON)
        if state["world_size"] != self.env.world:
            raise TrainingError(
                f"{directory} was written by {state['world_size']} processes; resume it with the same number "
                f"(this run has {self.env.world}) so that every process continues its own data stream"
            )
        tensors = ckpt.load_tensors(directory / TRAIN_STATE_TENSORS)
        for name, module in self.modules.items():
            weights = ckpt.load_tensors(directory / f"{name}.safetensors")
            module.load_state_dict(weights)
        try:
            self.optimizer.load_state_dict(optimizer_from_tensors(tensors, state["optimizer"]))
        except ValueError as e:  # e.g. another set of trainable weights than the run that wrote it
            raise TrainingError(
                f"{directory}: its optimizer state does not fit this run's trainable weights ({e}); it was "
                "written by another model or version of xlm: resume it with that version, or start a new run"
            ) from e
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(tensors[f"rng.torch.rank{self.env.rank}"])
        if self.device.type == "cuda" and f"rng.cuda.rank{self.env.rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.rank{self.env.rank}"], self.device)
        self.task.load_state_dict(state["task_states"][self.env.rank])
        self.step = int(state["step"])
        self.best = state.get("best")
        self.bad_evals = int(state.get("bad_evals", 0))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.window = LogWindow(**state.get("log_window", {}))
        if self.env.is_main:
            self._truncate_metrics(self.step)
        self.log(f"resumed from {directory} at step {self.step}")
        return True

    # ------------------------------------------------------------------ logging
    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines written after the checkpoint we resume from (a crashed run's tail)."""
        path = self.out_dir / METRICS
        if not path.is_file():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("step", 0) <= step:  # written before the checkpoint was taken
                keep.append(line)
        write_atomic(path, "".join(k + "\n" for k in keep))

    def record(self, record: dict[str, Any]) -> None:
        """Append ``record`` (with ``type`` and ``step``) to the run's ``metrics.jsonl``."""
        self._emit(record)

    def _emit(self, record: dict[str, Any]) -> None:
        if not self.env.is_main:
            return
        # NaN/inf are not JSON (strict readers fail; a NaN would poison moving averages): null
        record, _ = finite_json(record)
        with open(self.out_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self.tb.add_scalar(f"{record['type']}/{k}", v, record["step"])

    def _open_tensorboard(self) -> None:
        if not self.env.is_main or self.cfg.tensorboard is False:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional: pip install 'xlm[tensorboard]'
            if self.cfg.tensorboard:
                status(
                    "note: train.tensorboard is on but tensorboard is not installed (pip install 'xlm[tensorboard]'): no TensorBoard logs"
                )
            return
        self.tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        for m in self.modules.values():
            m.eval()
        with torch.no_grad(), self._autocast():
            metrics = self.task.evaluate() if self.env.is_main else {}
        for m in self.modules.values():
            m.train()
        metrics = gather_objects(metrics, self.env)[0]
        self._emit({"type": "eval", "step": self.step, "train_minutes": self.train_seconds / 60, **metrics})
        return metrics

    def _after_eval(self, metrics: dict[str, float]) -> bool:
        """Best checkpoint and early stopping; returns True when training should stop."""
        name = self.cfg.stopping_metric
        if not name:
            return False
        if name not in metrics:
            raise TrainingError(f"train.stopping_metric {name!r} is not among the evaluation metrics {sorted(metrics)}")
        value = metrics[name]
        better = self.best is None or (value < self.best if self.cfg.stopping_mode == "min" else value > self.best)
        if better:
            self.best, self.bad_evals = value, 0
            self.save(self.out_dir / "best", with_train_state=False)
            self.log(f"step {self.step}: new best {name} = {value:.4f} (saved {self.out_dir / 'best'})")
            return False
        self.bad_evals += 1
        if self.cfg.patience and self.bad_evals >= self.cfg.patience:
            self.log(f"early stopping: {name} did not improve for {self.bad_evals} evaluations")
            return True
        return False

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ training
    def _optimizer_step(self) -> tuple[float, bool]:
        """Clip, check for non-finite gradients, update. Returns (grad norm, applied)."""
        params = [p for m in self.modules.values() for p in m.parameters() if p.grad is not None]
        self.scaler.unscale_(self.optimizer)
        clip = self.optim_cfg.clip_norm if self.optim_cfg.clip_norm > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():  # fp16: the scaler lowers its scale and skips the step itself
                self.scaler.update()
            return norm, False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, True

    def _average_accumulated(self, micro: list[tuple[str, float, int]]) -> dict[str, float]:
        """After ``accumulate`` micro-batches (one objective, see the tasks), each backpropagated
        as ``loss x n_pred``: divide the gradients by the total ``n_pred``, so the update follows
        the mean over every predicted token. Returns each name's loss, weighted the same way."""
        total = sum(n for _, _, n in micro)
        grads = {id(p): p.grad for m in self.modules.values() for p in m.parameters() if p.grad is not None}
        for g in grads.values():
            g.div_(total)
        sums: dict[str, list[float]] = {}
        for name, value, n in micro:
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += value * n
            acc[1] += n
        return {name: s / n for name, (s, n) in sums.items()}

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        if last or not self.env.enabled:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for m in self.wrapped.values():
            if isinstance(m, nn.parallel.DistributedDataParallel):  # the modules wrap_ddp wrapped
                stack.enter_context(m.no_sync())
        return stack

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        metrics = self._start_training()
        show = cfg.progress and self.env.is_main and sys.stderr.isatty()  # a bar on a terminal only
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not show, dynamic_ncols=True)
        stopped_early = out_of_time = False
        started = time.monotonic()
        with _StopFlag() as stop:
            while self.step < cfg.max_steps:
                record, losses, tok_s, applied = self._update()
                bar.update(1)
                bar.set_postfix_str(" ".join(f"{k}={v:.3f}" for k, v in losses.items()) + f" tok/s={tok_s:,.0f}")
                self._stop_on_nonfinite_run()
                out_of_time = bool(cfg.max_minutes) and time.monotonic() - started > 60 * cfg.max_minutes
                if out_of_time:
                    self.log(f"time budget of {cfg.max_minutes} min reached at step {self.step}")
                last = self.step >= cfg.max_steps or out_of_time
                if applied and cfg.log_every and (self.step % cfg.log_every == 0 or last):
                    self._emit({**record, **self.window.fields(), "skipped": False})
                    self.window = LogWindow()
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                    metrics = self.evaluate()
                    stopped_early = self._after_eval(metrics)
                if (cfg.save_every and self.step % cfg.save_every == 0) or last or stopped_early or stop.signal:
                    self.save()
                if stop.signal is not None or stopped_early or out_of_time:
                    break
        bar.close()
        self._finish_training(stop.signal, self.step >= cfg.max_steps or stopped_early or out_of_time)
        return metrics

    def _start_training(self) -> dict[str, float]:
        """Threads, the run folder, TensorBoard, training mode; the metrics of the evaluation at
        step 0 when asked for (else none)."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._open_tensorboard()
        for m in self.modules.values():
            m.train()
        if self.step == 0 and self.cfg.eval_at_start:
            return self.evaluate()
        return {}

    def _update(self) -> tuple[dict[str, Any], dict[str, float], float, bool]:
        """One optimizer update over ``optim.accumulate`` micro-batches. Returns the step's
        train record (step, lr, grad norm), its losses by objective, its tokens/s and whether
        the update was applied (a skipped one is logged at once, an applied one averaged into
        the log window)."""
        accumulate = max(1, self.optim_cfg.accumulate)
        t0 = time.perf_counter()
        lr = learning_rate(self.step, self.optim_cfg, self.cfg.max_steps)
        set_lr(self.optimizer, lr)
        losses: dict[str, float] = {}
        n_tokens = 0
        micro_losses: list[tuple[str, float, int]] = []
        for micro in range(accumulate):
            with self._no_sync(micro == accumulate - 1), self._autocast():
                out = self.task.train_batch(self.step * accumulate + micro)
                if accumulate == 1:
                    loss = out.loss * out.weight / accumulate
                else:  # a sum over predicted tokens, divided by their total below
                    loss = out.loss * out.weight * max(1, out.n_pred)
            self.scaler.scale(loss).backward()
            losses[out.name] = float(out.loss.detach())
            micro_losses.append((out.name, losses[out.name], max(1, out.n_pred)))
            n_tokens += out.n_tokens
        if accumulate > 1:
            losses = self._average_accumulated(micro_losses)
        norm, applied = self._optimizer_step()
        self.step += 1
        self.tokens_seen += n_tokens * self.env.world
        if applied:
            self.nonfinite_run = 0
        else:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
            self.log(f"step {self.step}: non-finite loss or gradient ({norm}); update skipped")
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        tok_s = n_tokens * self.env.world / max(dt, 1e-9)
        record: dict[str, Any] = {"type": "train", "step": self.step, "lr": lr,
                                  "grad_norm": norm if math.isfinite(norm) else None}  # fmt: skip
        if not applied:  # a skipped update is recorded at once, on its own
            self._emit({**record, "tokens_per_s": tok_s, "skipped": True,
                        **{f"loss/{k}": v for k, v in losses.items()}})  # fmt: skip
        else:
            self.window.add(losses, n_tokens * self.env.world, dt)
        return record, losses, tok_s, applied

    def _stop_on_nonfinite_run(self) -> None:
        if self.nonfinite_run > self.cfg.max_nonfinite:
            self.save()
            raise TrainingError(
                f"{self.nonfinite_run} non-finite steps in a row at step {self.step}; stopped. "
                f"The weights are from before the fault (saved in {self.ckpt_dir}); lower the learning "
                "rate or check the data before resuming."
            )

    def _finish_training(self, signum: int | None, finished: bool) -> None:
        """Close TensorBoard; after a signal, stop (the checkpoint is saved); after a finished
        run (all steps, early stop or time budget), save ``final/``."""
        if self.tb is not None:
            self.tb.close()
        if signum is not None:
            raise Interrupted(signum, f"received signal {signum}: saved step {self.step} in "
                              f"{self.ckpt_dir}; continue with --resume")  # fmt: skip
        if finished:
            self.save(self.out_dir / "final", with_train_state=False)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
