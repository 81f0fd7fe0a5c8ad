"""Multi-process training through torchrun + DDP (gloo on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import tiny_config_overrides

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=240)


def test_two_processes_equal_one_process_on_the_combined_batch(tmp_path):
    r = torchrun([str(HERE / "ddp_worker.py"), str(tmp_path / "ddp")])
    assert r.returncode == 0, r.stderr[-3000:]
    r1 = subprocess.run([sys.executable, str(HERE / "ddp_worker.py"), str(tmp_path / "one")], env=ENV, capture_output=True, text=True)
    assert r1.returncode == 0, r1.stderr[-3000:]
    two = load_file(str(tmp_path / "ddp/final/model.safetensors"))
    one = load_file(str(tmp_path / "one/final/model.safetensors"))
    sys.path.insert(0, str(HERE))
    from ddp_worker import FixedTask

    init = FixedTask(0, 1).model.state_dict()
    for k in one:
        assert torch.allclose(two[k], one[k], atol=1e-6, rtol=1e-4), k
    changed = [k for k in one if not torch.allclose(one[k], init[k])]
    assert len(changed) > 10  # the step really moved the weights


def test_torchrun_pretrain_writes_from_rank_zero_only(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = ["-m", "xlm", "pretrain", *tiny_config_overrides(tiny_data, out, steps=4)]
    r = torchrun(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "final" / "model.safetensors").is_file()
    state = json.loads((out / "checkpoints" / "step-00000004" / "train_state.json").read_text())
    assert state["world_size"] == 2 and len(state["task_states"]) == 2
    # each rank reads its own part of the stream: sampler states differ or data offsets differ
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert steps == [1, 2, 3, 4]  # one writer: no duplicated lines


def test_torchrun_train_mt_with_denoising_and_back_translation(tiny_data, tmp_path):
    """Every MT step kind (supervised, denoising, back-translation) under DDP: each step
    touches a different part of the encoder-decoder, which DDP must accept."""
    from test_mt import mt_overrides

    out = tmp_path / "mt"
    objectives = ['objectives.mt=["en-fr"]', 'objectives.ae=["en","fr"]', 'objectives.bt=["en-fr-en"]']
    r = torchrun(["-m", "xlm", "train-mt", *mt_overrides(tiny_data, out, objectives, steps=4)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "final" / "model.safetensors").is_file()
    state = json.loads((out / "checkpoints" / "step-00000003" / "train_state.json").read_text())
    assert state["world_size"] == 2 and len(state["task_states"]) == 2
    train = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert [x["step"] for x in train] == [1, 2, 3, 4]
    assert {k.split("/")[1] for x in train for k in x if k.startswith("loss/")} >= {"mt", "ae", "bt"}
