"""Reliability: crashes lose nothing, bad files are detected, untrusted files never execute.

Every test injects one fault and checks what the protection promises (see docs/reliability.md):
killed and signalled training runs, torn and altered checkpoints, non-finite losses and
gradients, pickles planted in place of data files, disk-full while checkpointing, and sizes
beyond the model's limits. Runs are tiny (a 0.03M-parameter model, a few steps)."""

from __future__ import annotations

import ast
import errno
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import xlm
from xlm import checkpoint_io as ckpt
from xlm import fileio
from xlm.cli import main as cli_main
from xlm.config import ConfigError, load_config
from xlm.data.batching import PairBatcher, concat_pair, sentence_rows
from xlm.data.dataset import MonolingualData, PreparedData
from xlm.errors import CheckpointError, DataError, XLMError
from xlm.model.pretrained import load_pretrained
from xlm.tasks import pretraining
from xlm.tasks.pretraining import PretrainConfig, run_training
from xlm.text.vocab import Vocabulary
from xlm.training import trainer as trainer_mod
from xlm.training.trainer import TrainingError

STEPS = 8  # checkpoints at steps 3, 6 and 8 (save_every=3, and the last step)
KILL_SEED = 0  # the "random moment" of a SIGKILL: seeded, so a failure can be replayed
SRC = Path(xlm.__file__).resolve().parent


# ----------------------------------------------------------------------------- helpers


pytestmark = pytest.mark.usefixtures("restore_threads")


@pytest.fixture(scope="module")
def overrides(tiny_config_overrides):
    """Factory: ``overrides(data, out, steps=STEPS, extra=())``, the key=value list of a tiny run."""

    def make(data: Path, out: Path, steps: int = STEPS, extra: tuple[str, ...] = ()) -> list[str]:
        # one intra-op thread everywhere (in-process and in subprocesses): bitwise-equal results
        return [*tiny_config_overrides(data, out, steps), 'objectives.clm=["fr"]', "train.threads=1", *extra]

    return make


@pytest.fixture(scope="module")
def config(overrides):
    """Factory: ``config(data, out, steps=STEPS, extra=())``, the same run as a config."""

    def make(data: Path, out: Path, steps: int = STEPS, extra: tuple[str, ...] = ()) -> PretrainConfig:
        return load_config(PretrainConfig, None, overrides(data, out, steps, extra))

    return make


def train_records(run: Path) -> list[dict]:
    """The train records of metrics.jsonl, without the timing field (the only one that varies)."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "train":
            rec.pop("tokens_per_s")
            out.append(rec)
    return out


def weights(directory: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(directory / name))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def temp_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def assert_same_run(run: Path, reference: Path) -> None:
    """Same logged losses (every step exactly once, in order) and same final weights."""
    got, want = train_records(run), train_records(reference)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1)), "a step is missing or logged twice"
    assert got == want
    last = f"checkpoints/step-{STEPS:08d}"
    assert same_weights(weights(run / last), weights(reference / last))
    assert same_weights(weights(run / "final"), weights(reference / "final"))
    assert same_weights(
        weights(run / last, "train_state.safetensors"), weights(reference / last, "train_state.safetensors")
    )


@pytest.fixture(scope="module")
def reference(tiny_data, config, tmp_path_factory) -> Path:
    """One uninterrupted run: what every interrupted run must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference") / "run"
    n = torch.get_num_threads()
    try:
        run_training(config(tiny_data, out))
    finally:
        torch.set_num_threads(n)
    return out


@pytest.fixture
def finished_run(reference, tmp_path) -> Path:
    """A private copy of the reference run, free to damage."""
    return Path(shutil.copytree(reference, tmp_path / "run"))


# A child `xlm pretrain` with test-only hooks (production code has none): a delay per step so
# that a signal lands mid-run, and optionally a checkpoint write that stops half-way through a
# file (the hang point) so that SIGKILL strikes while the checkpoint is being written.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from xlm.tasks import pretraining
    from xlm.training import trainer

    delay = float(os.environ.get("TEST_STEP_DELAY", "0"))
    original_batch = pretraining.PretrainTask.train_batch

    def train_batch(self, micro_step):
        time.sleep(delay)
        return original_batch(self, micro_step)

    pretraining.PretrainTask.train_batch = train_batch

    hang = os.environ.get("TEST_HANG_IN_CHECKPOINT")
    if hang:
        original_save = trainer.save_file

        def save_file(tensors, filename, *args, **kwargs):
            original_save(tensors, filename, *args, **kwargs)
            path = Path(filename)
            if path.parent.name.startswith(f".{hang}.tmp-"):
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])  # a torn write, still in progress
                Path(os.environ["TEST_MARKER"]).write_text(str(path))
                time.sleep(600)

        trainer.save_file = save_file

    from xlm.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC.parent), env.get("PYTHONPATH")]))
    return env


def start_child(args: list[str], tmp: Path, hooks: bool = True, **env: str) -> tuple[subprocess.Popen, Path]:
    """Start ``xlm pretrain`` (with the test hooks, or as ``python -m xlm``); returns the process
    and the file that receives its (unbuffered) output."""
    log = tmp / f"child-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-c", CHILD] if hooks else [sys.executable, "-m", "xlm"]
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [*cmd, "pretrain", *args],
            env=child_env(PYTHONUNBUFFERED="1", **env),
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"child exited with {proc.returncode} before the expected moment")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the child")
        time.sleep(0.02)


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [0]
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass
    return max(steps)


# ----------------------------------------------------------------------------- 1. crashes and signals


@pytest.mark.slow
def test_sigkill_mid_checkpoint_and_at_a_random_moment_then_resume_is_exact(
    tiny_data, reference, tmp_path, overrides, config
):
    run = tmp_path / "run"
    args = overrides(tiny_data, run)
    ckdir = run / "checkpoints"
    # 1) SIGKILL while step-6's checkpoint is half written (a torn file inside the temp folder)
    marker = tmp_path / "hanging"
    proc, _ = start_child(args, tmp_path, TEST_HANG_IN_CHECKPOINT="step-00000006", TEST_MARKER=str(marker))
    wait_for(marker.exists, proc)
    torn = Path(marker.read_text())
    assert torn.parent.parent == ckdir and torn.stat().st_size > 0
    proc.kill()
    proc.wait()
    assert [p.name for p in ckpt.list_checkpoints(ckdir)] == ["step-00000003"]  # the torn one is invisible
    assert logged_steps(run) == 6  # metrics were logged past the newest checkpoint

    # 2) resume with the plain command line, and SIGKILL it at a random moment of its training
    delay = random.Random(KILL_SEED).uniform(0.0, 0.5)
    proc, log = start_child([*args, "--resume"], tmp_path, hooks=False)
    wait_for(lambda: "resumed from" in log.read_text(), proc)  # it trains again, from step 3
    assert "resumed from" in log.read_text() and "at step 3" in log.read_text()
    time.sleep(delay)
    proc.kill()
    proc.wait()
    print(f"second kill {delay:.3f}s after the resumed run started training (exit {proc.returncode})")

    # 3) resume to the end (in-process: one child start less)
    run_training(config(tiny_data, run), resume="latest")
    assert_same_run(run, reference)
    assert temp_dirs(ckdir) == [], "temporary folders of killed writes are cleaned up on resume"


@pytest.mark.slow
def test_sigterm_saves_at_the_step_boundary_exits_143_and_resumes_exactly(
    tiny_data, reference, tmp_path, overrides, config
):
    run = tmp_path / "run"
    args = overrides(tiny_data, run)
    proc, log = start_child(args, tmp_path, TEST_STEP_DELAY="0.25")
    wait_for(lambda: logged_steps(run) >= 4, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM  # stopped, not finished: 143
    assert "Traceback" not in log.read_text()
    assert "xlm pretrain: interrupted: received signal 15: saved step" in log.read_text()
    stopped = logged_steps(run)
    assert 4 <= stopped < STEPS
    newest = ckpt.list_checkpoints(run / "checkpoints")[-1]
    assert newest.name == f"step-{stopped:08d}", "the checkpoint is at the step where it stopped"
    ckpt.verify_checkpoint(newest)
    assert json.loads((newest / "train_state.json").read_text())["step"] == stopped
    assert not (run / "final").exists()
    run_training(config(tiny_data, run), resume="latest")  # in-process: saves a child start
    assert_same_run(run, reference)


def test_sigint_saves_and_resume_continues_to_the_same_result(
    tiny_data, reference, tmp_path, monkeypatch, capsys, config, overrides
):
    original = pretraining.PretrainTask.train_batch

    def interrupted(self, micro_step):
        if micro_step == 1:  # Ctrl-C during step 2
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, micro_step)

    run = tmp_path / "run"
    monkeypatch.setattr(pretraining.PretrainTask, "train_batch", interrupted)
    assert cli_main(["pretrain", *overrides(tiny_data, run)]) == 130  # saved, then exit 128 + SIGINT
    err = capsys.readouterr().err
    assert "xlm pretrain: interrupted: received signal 2: saved step 2" in err and "Traceback" not in err
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-00000002"]
    monkeypatch.setattr(pretraining.PretrainTask, "train_batch", original)
    run_training(config(tiny_data, run), resume="latest")
    assert_same_run(run, reference)


# ----------------------------------------------------------------------------- 2. checkpoint integrity


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _alter(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit, near the end (tensor data)
    path.write_bytes(bytes(data))


def _reseal(directory: Path) -> None:
    """Rewrite the manifest so that its checksums match the (tampered) files: what an attacker
    or a tool that 'repairs' checkpoints would do; the loaders must still refuse bad content."""
    manifest = json.loads((directory / ckpt.MANIFEST).read_text())
    for name in manifest["files"]:
        p = directory / name
        manifest["files"][name] = {"sha256": ckpt.sha256_file(p), "bytes": p.stat().st_size}
    fileio.write_json(directory / ckpt.MANIFEST, manifest)


@pytest.mark.parametrize(
    "damage, message", [(_truncate, r"size \d+ bytes, expected \d+ \(truncated\?\)"), (_alter, "checksum mismatch")]
)
def test_load_pretrained_detects_damage_and_names_the_file(finished_run, damage, message):
    final = finished_run / "final"
    load_pretrained(final)  # intact: loads
    damage(final / "model.safetensors")
    with pytest.raises(CheckpointError, match=re.escape(str(final / "model.safetensors")) + ": " + message):
        load_pretrained(final)


def test_load_pretrained_refuses_a_resealed_truncated_file(finished_run):
    final = finished_run / "final"
    _truncate(final / "model.safetensors")
    _reseal(final)
    with pytest.raises(CheckpointError, match=re.escape(str(final / "model.safetensors")) + ": cannot read tensors"):
        load_pretrained(final)


@pytest.mark.parametrize(
    "damage, message", [(_truncate, r"size \d+ bytes, expected \d+ \(truncated"), (_alter, "checksum mismatch")]
)
def test_resume_from_a_damaged_path_is_an_error_naming_the_file(
    tiny_data, finished_run, capsys, damage, message, overrides
):
    step6 = finished_run / "checkpoints/step-00000006"
    damage(step6 / "train_state.safetensors")
    rc = cli_main(["pretrain", *overrides(tiny_data, finished_run), "--resume", str(step6)])
    err = capsys.readouterr().err
    assert rc == 1
    assert re.search(re.escape(f"xlm pretrain: error: {step6 / 'train_state.safetensors'}: ") + message, err), err


def test_resume_latest_falls_back_past_a_truncated_checkpoint(tiny_data, finished_run, reference, capsys, overrides):
    ckdir = finished_run / "checkpoints"
    _truncate(ckdir / f"step-{STEPS:08d}" / "model.safetensors")
    assert cli_main(["pretrain", *overrides(tiny_data, finished_run), "--resume"]) == 0
    out = capsys.readouterr().err
    assert f"skipping damaged checkpoint: {ckdir / f'step-{STEPS:08d}' / 'model.safetensors'}: size" in out
    assert f"resuming from step-00000006: the newer step-{STEPS:08d} is damaged" in out
    assert_same_run(finished_run, reference)  # the lost steps were redone identically


def test_resume_with_every_checkpoint_damaged_starts_over_with_a_clean_log(
    tiny_data, finished_run, reference, capsys, config
):
    for c in ckpt.list_checkpoints(finished_run / "checkpoints"):
        _alter(c / "model.safetensors")
    run_training(config(tiny_data, finished_run), resume="latest")
    out = capsys.readouterr().err
    assert out.count("skipping damaged checkpoint") >= 3 and "starting from scratch" in out
    assert_same_run(finished_run, reference)  # each step logged once: the lost run's log was dropped


def _fake_checkpoints(folder: Path, steps: list[int]) -> None:
    for s in steps:
        ckpt.save_checkpoint(folder / f"step-{s:08d}", lambda d, s=s: (d / "w.bin").write_bytes(bytes([s]) * 64))


def test_keep_last_k_prunes_old_ones_but_never_the_newest_intact(tmp_path):
    folder = tmp_path / "checkpoints"
    _fake_checkpoints(folder, [1, 2, 3, 4])
    ckpt.prune_checkpoints(folder, keep=2, log=lambda m: None)
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step-00000003", "step-00000004"]

    _fake_checkpoints(folder, [5, 6])
    _alter(folder / "step-00000005/w.bin")
    _truncate(folder / "step-00000006/w.bin")
    logs: list[str] = []
    ckpt.prune_checkpoints(folder, keep=2, log=logs.append)
    names = [p.name for p in ckpt.list_checkpoints(folder)]
    assert names == ["step-00000004", "step-00000005", "step-00000006"], "the newest intact one (4) is kept"
    assert ckpt.latest_intact(folder, log=logs.append) == folder / "step-00000004"
    assert any("step-00000006" in m and "truncated" in m for m in logs)


def test_keep_last_in_a_training_run(tiny_data, tmp_path, config):
    run = tmp_path / "run"
    run_training(config(tiny_data, run, 5, ("train.save_every=1", "train.keep_last=2")))
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-00000004", "step-00000005"]


# ----------------------------------------------------------------------------- 3. numerical faults


class _InfGrad(torch.autograd.Function):
    """Identity forward (the loss stays finite), infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def _faulty(monkeypatch, faults: dict[int, str]) -> None:
    """Make PretrainTask return a NaN loss ('nan') or an infinite gradient ('inf') at the given
    (0-based) micro-steps; the step number logged is micro_step + 1."""
    original = pretraining.PretrainTask.train_batch

    def train_batch(self, micro_step):
        out = original(self, micro_step)
        kind = faults.get(micro_step)
        if kind == "nan":
            out.loss = out.loss * float("nan")
        elif kind == "inf":
            out.loss = _InfGrad.apply(out.loss)
        return out

    monkeypatch.setattr(pretraining.PretrainTask, "train_batch", train_batch)


def test_nonfinite_loss_or_gradient_skips_the_update(tiny_data, tmp_path, monkeypatch, capsys, config):
    _faulty(monkeypatch, {3: "nan", 5: "inf"})  # steps 4 and 6
    run = tmp_path / "run"
    run_training(config(tiny_data, run, 7, ("train.save_every=1", "train.keep_last=0")))
    w = {s: weights(run / f"checkpoints/step-{s:08d}") for s in range(1, 8)}
    assert same_weights(w[4], w[3]) and same_weights(w[6], w[5]), "a faulty step leaves the weights unchanged"
    assert not same_weights(w[5], w[4]) and not same_weights(w[7], w[6]), "training goes on afterwards"
    assert all(torch.isfinite(t).all() for t in w[7].values())
    recs = {r["step"]: r for r in train_records(run)}
    assert [s for s, r in recs.items() if r["skipped"]] == [4, 6]
    assert recs[4]["grad_norm"] is None and recs[6]["grad_norm"] is None
    assert [v for k, v in recs[4].items() if k.startswith("loss/")] == [None]  # NaN is logged as null (valid JSON)
    assert all(np.isfinite(v) for k, v in recs[6].items() if k.startswith("loss/"))  # finite loss, inf gradient
    out = capsys.readouterr().err
    assert "step 4: non-finite loss or gradient" in out and "step 6: non-finite loss or gradient" in out
    assert json.loads((run / "checkpoints/step-00000007/train_state.json").read_text())["nonfinite_total"] == 2


def test_too_many_nonfinite_steps_stop_with_the_pre_fault_weights_saved(tiny_data, tmp_path, monkeypatch, config):
    _faulty(monkeypatch, {i: "nan" for i in range(3, 100)})  # every step from step 4 on
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match="3 non-finite steps in a row at step 6"):
        run_training(config(tiny_data, run, 12, ("train.max_nonfinite=2", "train.keep_last=0")))
    ckdir = run / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(ckdir)] == ["step-00000003", "step-00000006"]
    ckpt.verify_checkpoint(ckdir / "step-00000006")
    assert same_weights(weights(ckdir / "step-00000006"), weights(ckdir / "step-00000003"))
    assert json.loads((ckdir / "step-00000006/train_state.json").read_text())["nonfinite_total"] == 3
    assert not (run / "final").exists()


# ----------------------------------------------------------------------------- 5. no code execution


class _Evil:
    """Unpickling this object creates a file: proof that a loader executed the payload."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def payload(tmp_path):
    marker = tmp_path / "PWNED"
    data = pickle.dumps(_Evil(marker), protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(data).close()  # the payload is live: loading it runs code
    assert marker.exists()
    marker.unlink()
    return marker, data


def _object_npy(path: Path, marker: Path) -> None:
    """A well-formed .npy of dtype object: its data is a pickle of the payload."""
    arr = np.empty(1, dtype=object)
    arr[0] = _Evil(marker)
    np.save(path, arr, allow_pickle=True)


def test_pickled_weights_and_train_state_are_refused(tiny_data, finished_run, payload, config):
    marker, data = payload
    final = finished_run / "final"
    (final / "model.safetensors").write_bytes(data)
    _reseal(final)  # even with matching checksums
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read tensors"):
        load_pretrained(final)
    step6 = finished_run / "checkpoints/step-00000006"
    for name in ("train_state.safetensors", "model.safetensors"):
        good = (step6 / name).read_bytes()
        (step6 / name).write_bytes(data)
        _reseal(step6)
        with pytest.raises(CheckpointError, match=f"{name}: cannot read tensors"):
            run_training(config(tiny_data, finished_run), resume=str(step6))
        (step6 / name).write_bytes(good)
        _reseal(step6)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["vocab.json", "model.json", "manifest.json"])
def test_pickled_json_files_of_a_checkpoint_are_refused(finished_run, payload, name):
    marker, data = payload
    final = finished_run / "final"
    (final / name).write_bytes(data)
    if name != "manifest.json":
        _reseal(final)
    with pytest.raises(XLMError, match=re.escape(name)):
        load_pretrained(final)
    assert not marker.exists()


def test_pickled_vocabulary_and_prepare_info_are_refused(tiny_data, tmp_path, payload):
    marker, data = payload
    d = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    (d / "vocab.json").write_bytes(data)
    with pytest.raises(DataError, match="vocab.json: not a JSON vocabulary"):
        Vocabulary.from_dir(d)
    d = Path(shutil.copytree(tiny_data, tmp_path / "data2"))
    (d / "prepare.json").write_bytes(data)
    with pytest.raises(DataError, match="prepare.json"):
        PreparedData.open(d)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["raw pickle", "object npy"])
def test_pickled_index_is_refused(tiny_data, tmp_path, payload, kind):
    marker, data = payload
    d = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    idx = d / "train.en.idx.npy"
    if kind == "raw pickle":
        idx.write_bytes(data)
    else:
        _object_npy(idx, marker)
    with pytest.raises(DataError, match=re.escape(str(idx))):
        MonolingualData.open(d / "train.en")
    with pytest.raises(DataError, match=re.escape(str(idx))):
        PreparedData.open(d).mono("train", "en")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_pickled_config_is_refused(tmp_path, payload, protocol):
    marker, _ = payload
    path = tmp_path / "config.toml"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=protocol))
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(PretrainConfig, path)
    assert cli_main(["pretrain", "--config", str(path)]) == 1
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
def test_original_xlm_checkpoint_loader_refuses_code(tmp_path, payload, kind):
    from xlm.interop import original

    marker, data = payload
    path = tmp_path / "mlm_enfr.pth"
    if kind == "torch.save":
        torch.save({"model": {"w": torch.zeros(2)}, "params": _Evil(marker)}, path)
    else:
        path.write_bytes(data)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        original.safe_torch_load(path)
    assert not marker.exists()


def _unsafe_torch_loads(source: str) -> list[int]:
    """Lines of ``torch.load`` calls without ``weights_only=True``, except those inside an
    ``if`` on a ``trust_pickle`` opt-in (the user's explicit choice)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load"):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        if isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True:
            continue
        child, up, opted_in = node, parents.get(node), False
        while up is not None and not opted_in:  # inside the body of `if trust_pickle...:`?
            test = ast.unparse(up.test) if isinstance(up, ast.If) else ""
            opted_in = child in getattr(up, "body", ()) and "trust_pickle" in test and "not " not in test
            child, up = up, parents.get(up)
        if not opted_in:
            bad.append(node.lineno)
    return bad


def test_no_loader_can_unpickle():
    """Static guard: no module of the package calls a reader that can run code (the only
    ``torch.load(weights_only=False)`` must sit behind an explicit ``trust_pickle`` opt-in)."""
    forbidden = [
        (r"\bpickle\.(load|loads|Unpickler)\b", "unpickling"),
        (r"\b(cPickle|dill|joblib|marshal|shelve)\b", "a pickle-based module"),
        (r"allow_pickle\s*=\s*True", "numpy with allow_pickle=True"),
        (r"\byaml\.(load|unsafe_load)\(", "yaml.load"),
        (r"(?<![\w.])(eval|exec)\(", "eval/exec"),
    ]
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(SRC)
        for pattern, what in forbidden:
            bad += [f"{name}: {what} ({m.group(0)})" for m in re.finditer(pattern, text)]
        bad += [f"{name}:{line}: torch.load without weights_only=True" for line in _unsafe_torch_loads(text)]
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------- 6. resource limits


def test_tlm_token_budget_below_one_maximal_pair_is_refused_at_config_time(tiny_data, tmp_path, config):
    # max_len=30: a maximal pair is 2*30+4 = 64 tokens
    with pytest.raises(ConfigError, match=r"data\.tlm_max_tokens=63 .*2 \* data\.max_len \+ 4 = 64"):
        config(tiny_data, tmp_path, extra=("data.tlm_max_tokens=63",))
    config(tiny_data, tmp_path, extra=("data.tlm_max_tokens=64",))
    # without a TLM objective the budget is unused, so it is not checked
    config(tiny_data, tmp_path, extra=("data.tlm_max_tokens=1", 'objectives.mlm=["en"]'))


@pytest.fixture(scope="module")
def long_sentence_data(make_tiny_prepared, write_binarized, tmp_path_factory) -> Path:
    """The tiny corpus plus, in every file, sentences of 200 words (model.max_positions=64)."""
    root = make_tiny_prepared(tmp_path_factory.mktemp("long") / "data", n_train=60, n_valid=8)
    vocab = Vocabulary.from_dir(root)
    rng = np.random.default_rng(1)
    for split in ("train", "valid"):
        for lang, base in (("en", 14), ("fr", 54)):
            for name in (f"{split}.{lang}", f"{split}.en-fr.{lang}"):
                data = MonolingualData.open(root / name)
                sents = [data.sentence(i).tolist() for i in range(len(data))]
                for k in (0, len(sents) // 2):
                    sents[k] = (base + rng.integers(0, 40, size=200 + k)).tolist()
                write_binarized(root / name, sents, lang, vocab.hash, len(vocab))
    return root


def test_sentences_longer_than_the_model_never_crash_training(long_sentence_data, tmp_path, config):
    cfg = config(long_sentence_data, tmp_path / "run", 4, ("train.eval_every=2",))
    d = cfg.data
    data = PreparedData.open(long_sentence_data).para("train", "en", "fr")
    assert data.src.lengths.max() >= 200 > cfg.model.max_positions
    # pairs: one with a side over data.max_len words is dropped (never served), not cut
    batcher = PairBatcher(data, d.tlm_max_tokens, d.max_len, seed=0)
    for ids in batcher._batches:
        assert data.src.row_lengths(ids).max() <= d.max_len and data.tgt.row_lengths(ids).max() <= d.max_len
        batch = concat_pair(sentence_rows(data.src, ids, d.max_len), sentence_rows(data.tgt, ids, d.max_len), 0, 1)
        assert batch.tokens.shape[1] <= 2 * d.max_len + 4
        assert int(batch.positions.max()) < cfg.model.max_positions
        assert batch.tokens.numel() <= d.tlm_max_tokens or len(ids) == 1
    # streams (MLM/CLM) are cut into rows of bptt tokens whatever the sentence lengths
    metrics = run_training(cfg)
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    assert {"valid/tlm/en-fr/ppl", "valid/mlm/en/ppl", "valid/clm/fr/ppl"} <= metrics.keys()


def _enospc_after_half(real):
    def save_file(tensors, filename, *args, **kwargs):
        path = Path(filename)
        if path.parent.name.startswith(".step-00000006.tmp-"):
            real(tensors, filename, *args, **kwargs)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(tensors, filename, *args, **kwargs)

    return save_file


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
    tiny_data, reference, tmp_path, monkeypatch, config
):
    run = tmp_path / "run"
    monkeypatch.setattr(trainer_mod, "save_file", _enospc_after_half(trainer_mod.save_file))
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        run_training(config(tiny_data, run))
    assert "step-00000006" in str(info.value) and "previous checkpoints are untouched" in str(info.value)
    ckdir = run / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(ckdir)] == ["step-00000003"]
    ckpt.verify_checkpoint(ckdir / "step-00000003")
    assert temp_dirs(ckdir) == [], "no temporary folder is left behind"
    monkeypatch.undo()
    run_training(config(tiny_data, run), resume="latest")  # space freed: resume and finish
    assert_same_run(run, reference)


def test_stale_temporaries_of_a_killed_writer_are_cleaned_up(tmp_path):
    _fake_checkpoints(tmp_path, [1, 2])
    # killed while writing step 3; killed between the two renames that replace step 2 in place
    (tmp_path / ".step-00000003.tmp-abc").mkdir()
    (tmp_path / ".step-00000003.tmp-abc/w.bin").write_bytes(b"half")
    os.replace(tmp_path / "step-00000002", tmp_path / ".step-00000002.old-999")
    _fake_checkpoints(tmp_path, [4])
    ckpt.save_checkpoint(tmp_path / ".step-00000004.old-998", lambda d: None)  # replaced, then killed
    logs: list[str] = []
    ckpt.remove_stale_temporaries(tmp_path, logs.append)
    assert temp_dirs(tmp_path) == []
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000001", "step-00000002", "step-00000004"]
    ckpt.verify_checkpoint(tmp_path / "step-00000002")
    assert (tmp_path / "step-00000004/w.bin").is_file()
    assert len(logs) == 2


def test_failed_overwrite_restores_the_previous_directory(tmp_path, monkeypatch):
    """'final' and 'best' are replaced in place: a failure must not lose the old one."""
    target = tmp_path / "best"
    ckpt.save_checkpoint(target, lambda d: (d / "w.bin").write_bytes(b"old" * 10))
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        if Path(src).name.endswith(".tmp"):  # a file of the checkpoint written atomically
            return real_replace(src, dst)
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # moving the new folder in
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(CheckpointError, match="No space left on device"):
        ckpt.save_checkpoint(target, lambda d: (d / "w.bin").write_bytes(b"new" * 10))
    monkeypatch.undo()
    assert calls[0][0] == "best" and calls[1][1] == "best"
    ckpt.verify_checkpoint(target)
    assert (target / "w.bin").read_bytes() == b"old" * 10
    assert temp_dirs(tmp_path) == []
