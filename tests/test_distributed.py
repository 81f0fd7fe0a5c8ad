"""Multi-process training through torchrun + DDP (gloo on CPU)."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # every test starts torchrun

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=240)


def test_two_processes_equal_one_process_on_the_combined_batch(tmp_path):
    r = torchrun([str(HERE / "ddp_worker.py"), str(tmp_path / "ddp")])
    assert r.returncode == 0, r.stderr[-3000:]
    r1 = subprocess.run(
        [sys.executable, str(HERE / "ddp_worker.py"), str(tmp_path / "one")], env=ENV, capture_output=True, text=True
    )
    assert r1.returncode == 0, r1.stderr[-3000:]
    two = load_file(str(tmp_path / "ddp/final/model.safetensors"))
    one = load_file(str(tmp_path / "one/final/model.safetensors"))
    from ddp_worker import FixedTask  # tests/ is on sys.path (pytest's pythonpath setting)

    init = FixedTask(0, 1).model.state_dict()
    for k in one:
        assert torch.allclose(two[k], one[k], atol=1e-6, rtol=1e-4), k
    changed = [k for k in one if not torch.allclose(one[k], init[k])]
    assert len(changed) > 10  # the step really moved the weights


def test_torchrun_pretrain_writes_from_rank_zero_only(tiny_data, tmp_path, tiny_config_overrides):
    out = tmp_path / "run"
    args = ["-m", "xlm", "pretrain", *tiny_config_overrides(tiny_data, out, steps=4)]
    r = torchrun(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "final" / "model.safetensors").is_file()
    state = json.loads((out / "checkpoints" / "step-00000004" / "train_state.json").read_text())
    assert state["world_size"] == 2 and len(state["task_states"]) == 2
    # each rank reads its own part of the stream: sampler states differ or data offsets differ
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in ln]
    assert steps == [1, 2, 3, 4]  # one writer: no duplicated lines


def test_torchrun_train_mt_with_denoising_and_back_translation(tiny_data, tmp_path, mt_overrides):
    """Every MT step kind (supervised, denoising, back-translation) under DDP: each step
    touches a different part of the encoder-decoder, which DDP must accept."""
    out = tmp_path / "mt"
    objectives = ['objectives.mt=["en-fr"]', 'objectives.ae=["en","fr"]', 'objectives.bt=["en-fr-en"]']
    r = torchrun(["-m", "xlm", "train-mt", *mt_overrides(tiny_data, out, objectives, steps=4)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "final" / "model.safetensors").is_file()
    state = json.loads((out / "checkpoints" / "step-00000003" / "train_state.json").read_text())
    assert state["world_size"] == 2 and len(state["task_states"]) == 2
    train = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in ln]
    assert [x["step"] for x in train] == [1, 2, 3, 4]
    assert {k.split("/")[1] for x in train for k in x if k.startswith("loss/")} >= {"mt", "ae", "bt"}


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_data, pretrain_config, tmp_path_factory) -> Path:
    from xlm.tasks.pretraining import run_training

    threads = torch.get_num_threads()  # train.threads=1 sets torch's global thread count
    out = tmp_path_factory.mktemp("ddp_cls_pretrain") / "run"
    try:
        run_training(pretrain_config(tiny_data, out, 2, "train.threads=1"))
    finally:
        torch.set_num_threads(threads)
    return out / "final"


@dataclass(frozen=True)
class DdpFinetune:
    """A 2-process fine-tuning run: its folder, ddp_worker.py's per-rank evidence (``ranks``:
    the checkpoint folders each rank wrote and its training batches; ``spy``: each rank's final
    weights), the distinct training rows, the number of epochs and what the run printed."""

    out: Path
    spy: Path
    ranks: list[dict]
    lines: list[str]
    epochs: int
    stdout: str

    @property
    def n_steps(self) -> int:
        return len(self.ranks[0]["batches"])

    @property
    def per_epoch(self) -> int:
        return self.n_steps // self.epochs


@pytest.fixture(scope="module")
def ddp_finetune(tiny_checkpoint, tmp_path_factory) -> DdpFinetune:
    """`xlm finetune classify` with 2 processes, run through ddp_worker.py (which calls the CLI
    as `python -m xlm` does and records what each rank did)."""
    from test_classification import toy_set

    tmp = tmp_path_factory.mktemp("ddp_finetune")
    train = toy_set(tmp / "train.en.tsv", "e", 150, 1)
    lines = list(dict.fromkeys(train.read_text().splitlines()))  # distinct rows: each one is seen by exactly one rank
    train.write_text("\n".join(lines) + "\n")
    valid = toy_set(tmp / "valid.en.tsv", "e", 20, 2)
    test_en = toy_set(tmp / "test.en.tsv", "e", 20, 3)
    test_fr = toy_set(tmp / "test.fr.tsv", "f", 20, 3)
    out, spy, epochs = tmp / "cls", tmp / "spy", 2
    args = [
        "finetune", "classify", str(tiny_checkpoint), "--train", f"en={train}", "--valid", f"en={valid}",
        "--test", f"en={test_en}", "--test", f"fr={test_fr}", "--pretokenized", "--epochs", str(epochs),
        "--out", str(out), "optim.lr=0.001", "finetune.head_lr=0.003", "optim.warmup_steps=2",
        "data.max_tokens=64", "data.max_len=32", "train.log_every=1", "train.progress=false", "train.threads=1",
    ]  # fmt: skip
    r = torchrun([str(HERE / "ddp_worker.py"), "--finetune", str(spy), *args])
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((spy / f"rank{k}.json").read_text()) for k in (0, 1)]
    return DdpFinetune(out, spy, ranks, lines, epochs, r.stdout)


def test_torchrun_finetune_writes_one_metrics_line_per_step_and_per_epoch(ddp_finetune):
    run = ddp_finetune
    records = [json.loads(ln) for ln in (run.out / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in records if x["type"] == "train"]
    n, per_epoch = run.n_steps, run.per_epoch
    assert n == len(run.ranks[1]["batches"]) == run.epochs * per_epoch and per_epoch >= 3
    assert steps == list(range(1, n + 1))
    evals = [x for x in records if x["type"] == "eval"]
    assert [x["step"] for x in evals] == [per_epoch, n] and all(0 <= x["valid/acc"] <= 100 for x in evals)


def test_torchrun_finetune_ranks_split_every_epoch_and_tokens_are_counted_across_ranks(ddp_finetune):
    """Every epoch, the two ranks train on disjoint halves of the training set (at most one
    batch, the odd one out, is left over), so an epoch takes half the steps of one process."""
    run = ddp_finetune
    n, per_epoch = run.n_steps, run.per_epoch

    def rows(rank: int, epoch: int) -> list[tuple[int, ...]]:
        return [tuple(x) for b in run.ranks[rank]["batches"][epoch * per_epoch : (epoch + 1) * per_epoch] for x in b]

    biggest = max(len(b) for k in (0, 1) for b in run.ranks[k]["batches"])
    for epoch in range(run.epochs):
        a, b = rows(0, epoch), rows(1, epoch)
        assert len(set(a)) == len(a) and len(set(b)) == len(b) and not set(a) & set(b)
        assert len(run.lines) - biggest < len(a) + len(b) <= len(run.lines)
    # tokens seen are counted across ranks (rank 0 alone saw about half of them)
    state = json.loads((run.out / "checkpoints" / f"step-{n:08d}" / "train_state.json").read_text())
    assert state["world_size"] == 2 and len(state["task_states"]) == 2 and state["step"] == n
    both = sum(len(x) - 1 for k in (0, 1) for b in run.ranks[k]["batches"] for x in b)  # minus the language id
    assert abs(state["tokens_seen"] - both) <= 0.2 * both, (state["tokens_seen"], both)


def test_torchrun_finetune_writes_and_prints_from_rank_zero_only(ddp_finetune):
    run = ddp_finetune
    n, per_epoch = run.n_steps, run.per_epoch
    # only rank 0 wrote checkpoints, each once; the folders are complete (no temporaries left)
    assert run.ranks[1]["saves"] == []
    saved = run.ranks[0]["saves"]
    assert sorted(x for x in saved if x != "best") == ["final", f"step-{per_epoch:08d}", f"step-{n:08d}"]
    assert 1 <= saved.count("best") <= run.epochs
    assert sorted(p.name for p in (run.out / "checkpoints").iterdir()) == [f"step-{n:08d}"]
    assert not [p for p in run.out.iterdir() if p.name.startswith(".")]
    # the test accuracies are printed (and written) once, by rank 0
    stdout = run.stdout
    assert stdout.count("zero-shot") == 1, stdout
    assert stdout.count("fine-tuned model:") == 1 and "no test files given" not in stdout, stdout
    assert stdout.count(" examples") == len({ln for ln in stdout.splitlines() if ln.endswith(" examples")}), stdout
    acc = json.loads((run.out / "results.json").read_text())["accuracy"]
    assert set(acc) == {"en", "fr", "average"} and all(0 <= v <= 100 for v in acc.values())


def test_torchrun_finetune_keeps_the_replicas_identical_and_final_holds_them(ddp_finetune, tiny_checkpoint):
    run = ddp_finetune
    w0, w1 = (load_file(str(run.spy / f"rank{k}.safetensors")) for k in (0, 1))
    assert w0.keys() == w1.keys() and any(k.startswith("head.") for k in w0)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    final = {f"model.{k}": v for k, v in load_file(str(run.out / "final" / "model.safetensors")).items()}
    final |= {f"head.{k}": v for k, v in load_file(str(run.out / "final" / "head.safetensors")).items()}
    assert final.keys() == w0.keys() and all(torch.equal(final[k], w0[k]) for k in w0)
    start = load_file(str(tiny_checkpoint / "model.safetensors"))
    assert sum(not torch.equal(start[k], w0[f"model.{k}"]) for k in start) > 10  # the encoder was fine-tuned


def test_torchrun_finetune_gives_an_ordinary_model_that_classify_uses(ddp_finetune, monkeypatch, capsys):
    """The run folder is an ordinary fine-tuned model (its best epoch) that `xlm classify` uses."""
    import io

    from xlm.cli import main
    from xlm.model.classifier import load_classifier

    assert load_classifier(ddp_finetune.out).labels == ["high", "low"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"f30</w> f31</w> f35</w>\nf1</w> f2</w>\n")))
    capsys.readouterr()
    assert main(["classify", str(ddp_finetune.out), "--lang", "fr", "--pretokenized"]) == 0
    predicted = capsys.readouterr().out.splitlines()
    assert len(predicted) == 2 and set(predicted) <= {"high", "low"}
