"""XLCo (cross-lingual contrast) and the objective registry."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file

from xlm.config import ConfigError, load_config
from xlm.objectives import contrastive
from xlm.objectives.contrastive import MomentumEncoder, contrastive_loss, queue_contrastive_loss
from xlm.tasks.pretraining import PretrainConfig, PretrainTask, run_training


def _pairs(n=16, d=8, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x + noise * torch.randn(n, d, generator=g)


def test_aligned_pairs_give_a_low_loss_and_shuffled_pairs_a_high_one():
    x, y = _pairs()
    aligned = float(contrastive_loss(x, y, 0.05))
    shuffled = float(contrastive_loss(x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))], 0.05))
    assert aligned < 0.05 and shuffled > 2.0


def test_temperature_sharpens_and_a_large_one_tends_to_chance():
    x, y = _pairs(noise=0.3)
    losses = [float(contrastive_loss(x, y, t)) for t in (0.02, 0.1, 1.0, 1000.0)]
    assert losses == sorted(losses)
    assert losses[-1] == pytest.approx(torch.log(torch.tensor(16.0)).item(), abs=1e-2)  # uniform over 16 keys


def test_gradients_reach_both_sides():
    x, y = _pairs(noise=0.5)
    x.requires_grad_(True)
    y.requires_grad_(True)
    contrastive_loss(x, y, 0.1).backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


def _ddp_worker(rank: int, world: int, port: int, x: torch.Tensor, y: torch.Tensor, out: dict) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n = len(x) // world
        xs, ys = x[rank * n : (rank + 1) * n].clone().requires_grad_(True), y[rank * n : (rank + 1) * n].clone()
        ys.requires_grad_(True)
        loss = contrastive_loss(xs, ys, 0.1)
        loss.backward()
        # ranks may hold different numbers of pairs (the last batch of a window): 6 and 5 rows
        lo, hi = (0, 6) if rank == 0 else (6, 11)
        uneven = contrastive_loss(x[lo:hi], y[lo:hi], 0.1)
        out[rank] = (float(loss), xs.grad.clone(), ys.grad.clone(), float(uneven))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradients_of_one_process_on_the_whole_batch():
    """Negatives come from every rank and gradients flow back through the gather: the mean of
    the ranks' losses and the DDP-averaged gradients equal one process on all the pairs."""
    x, y = _pairs(n=12, noise=0.5)
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), x, y, out), nprocs=2, join=True)
    xa, ya = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    whole = contrastive_loss(xa, ya, 0.1)
    whole.backward()
    assert (out[0][0] + out[1][0]) / 2 == pytest.approx(whole.item(), abs=1e-5)
    # DDP averages the ranks' gradients (divides their sum by 2)
    assert torch.allclose(torch.cat([out[0][1], out[1][1]]) / 2, xa.grad, atol=1e-6)
    assert torch.allclose(torch.cat([out[0][2], out[1][2]]) / 2, ya.grad, atol=1e-6)
    # uneven ranks: each query sees all 11 keys, so the row-weighted mean is the whole loss
    assert (6 * out[0][3] + 5 * out[1][3]) / 11 == pytest.approx(float(contrastive_loss(x[:11], y[:11], 0.1)), abs=1e-5)


@pytest.fixture
def xlco_cfg(pretrain_config):
    """Factory: ``xlco_cfg(data, out, steps, extra=())``, a tiny MLM+TLM+XLCo run's config."""
    xlco = ['objectives.xlco=["en-fr"]', "objectives.xlco_batch_size=8", "objectives.xlco_turns=1"]
    return lambda data, out, steps, extra=(): pretrain_config(data, out, steps, *xlco, *extra)


def test_xlco_trains_alongside_mlm_tlm_and_resumes_exactly(tiny_data, xlco_cfg, straight_and_resumed):
    runs = straight_and_resumed(lambda out, steps: xlco_cfg(tiny_data, out, steps), 6)
    a, b = runs.straight_losses, runs.split_losses
    assert a == b and any("loss/xlco/en-fr" in v for v in a.values())
    assert runs.same_tensors("checkpoints/step-00000006/model.safetensors")


def test_xlco_lowers_its_loss_and_reports_validation_retrieval(tiny_data, tmp_path, xlco_cfg):
    cfg = xlco_cfg(tiny_data, tmp_path / "r", 1, ['objectives.mlm=["en"]', "objectives.xlco_layers=[1]"])
    task = PretrainTask(cfg, seed=0)
    assert task.kinds == ["mlm", "xlco"]
    opt = torch.optim.Adam(task.model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        out = task.train_batch(2 * step + 1)  # the xlco turn
        assert out.name == "xlco/en-fr"
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    task.model.eval()
    metrics = task.evaluate()
    assert 0.0 <= metrics["valid/xlco/en-fr/p@1"] <= 1.0 and "valid/xlco/p@1" in metrics


def test_xlco_bad_input_is_a_one_line_error(tiny_data, tmp_path, xlco_cfg):
    import shutil

    no_pairs = tmp_path / "data"
    shutil.copytree(tiny_data, no_pairs)
    for f in no_pairs.glob("train.en-fr.*"):
        f.unlink()
    with pytest.raises(ConfigError, match=r"objectives\.xlco: 'fr-en' has no parallel training data"):
        PretrainTask(
            xlco_cfg(no_pairs, tmp_path / "r", 1, ['objectives.xlco=["fr-en"]', 'objectives.mlm=["en"]']), seed=0
        )
    with pytest.raises(ConfigError, match=r"xlco takes pairs"):
        xlco_cfg(tiny_data, tmp_path / "r", 1, ['objectives.xlco=["en"]'])
    with pytest.raises(
        ConfigError, match=r"objectives\.xlco_layers: 5 does not exist, the model has layers 0 \(embeddings\) \.\. 2"
    ):
        PretrainTask(xlco_cfg(tiny_data, tmp_path / "r", 1, ["objectives.xlco_layers=[0, 5]"]), seed=0)
    with pytest.raises(ConfigError, match=r"objectives\.xlco_pooling"):
        xlco_cfg(tiny_data, tmp_path / "r", 1, ['objectives.xlco_pooling="max"'])


def test_an_objective_registered_in_a_few_lines_runs_in_the_trainer(
    tiny_data, tmp_path, tiny_config_overrides, train_losses
):
    """The registry: one class (entries, source, loss) and the trainer alternates it with the rest."""
    from xlm.objectives.language_modeling import MLMObjective
    from xlm.objectives.registry import register, unregister

    @register
    class Louder(MLMObjective):  # MLM on English, twice the loss: enough to show the wiring
        name = "louder"
        turn = 50

        @classmethod
        def entries(cls, settings):
            return ["en"]

        def loss(self, model, source, device):
            out = super().loss(model, source, device)  # (loss, n_tokens, n_pred)
            return out._replace(loss=2 * out.loss)

    try:
        run = tmp_path / "r"
        run_training(load_config(PretrainConfig, None, tiny_config_overrides(tiny_data, run, 4)))
        names = {k for v in train_losses(run).values() for k in v}
        assert "loss/louder/en" in names and "loss/mlm/en" in names or "loss/mlm/fr" in names
    finally:
        unregister("louder")


# --- momentum encoder and queue (xlco_queue > 0) ------------------------------------------


def _queue_task(xlco_cfg, data, tmp_path, queue=16, momentum=0.9, extra=()):
    cfg = xlco_cfg(data, tmp_path / "q", 1, ['objectives.mlm=["en"]', f"objectives.xlco_queue={queue}",
                                           f"objectives.xlco_momentum={momentum}", *extra])  # fmt: skip
    return PretrainTask(cfg, seed=0)


def test_the_queue_is_a_ring_buffer_and_the_loss_uses_batch_and_queue_negatives(
    tiny_data, tmp_path, monkeypatch, xlco_cfg
):
    task = _queue_task(xlco_cfg, tiny_data, tmp_path, queue=20)
    mom = task.objectives["xlco"].momentum
    assert set(task.modules()) == {"model", "xlco_momentum"} and mom.size == 20
    assert not any(p.requires_grad for p in mom.parameters())
    widths = []
    real = contrastive.info_nce

    def spy(queries, keys, offset, temperature):
        widths.append((queries.shape[0], keys.shape[0]))
        return real(queries, keys, offset, temperature)

    monkeypatch.setattr(contrastive, "info_nce", spy)
    filled = []
    for step in range(4):
        task.train_batch(2 * step + 1)  # the xlco turns: 8 pairs each
        filled.append((int(mom.filled), int(mom.ptr)))
    # keys of the batch + the filled part of the queue, in both directions
    assert widths == [(8, 8), (8, 8), (8, 16), (8, 16), (8, 24), (8, 24), (8, 28), (8, 28)]
    assert filled == [(8, 8), (16, 16), (20, 4), (20, 12)]

    # the ring buffer: writes go over the oldest slots, the rows beyond `size` keep only the last ones
    enc = MomentumEncoder(torch.nn.Linear(2, 2), size=5, dim=3, momentum=0.5)
    rows = torch.arange(3 * 14, dtype=torch.float).reshape(14, 3)
    enc.enqueue(rows[:3], -rows[:3])
    enc.enqueue(rows[3:7], -rows[3:7])  # wraps: slots 3, 4, 0, 1
    assert torch.equal(enc.queue[0], rows[[5, 6, 2, 3, 4]]) and torch.equal(enc.queue[1], -enc.queue[0])
    assert (int(enc.ptr), int(enc.filled)) == (2, 5)
    enc.enqueue(rows[7:14], -rows[7:14])  # more than the queue holds: the last 5, from slot 2 on
    assert torch.equal(enc.queue[0], rows[[12, 13, 9, 10, 11]]) and int(enc.ptr) == 2  # the oldest: row 9

    # the loss against batch + queue is the symmetric cross-entropy written out
    x, y = _pairs(n=4, d=3, noise=0.5)
    xk, yk = F.normalize(x + 0.1, dim=-1), F.normalize(y - 0.1, dim=-1)
    queue = F.normalize(torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(3)), dim=-1)
    xn, yn = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    gold = torch.arange(4)
    want = (F.cross_entropy(xn @ torch.cat([yk, queue[1]]).T / 0.1, gold)
            + F.cross_entropy(yn @ torch.cat([xk, queue[0]]).T / 0.1, gold)) / 2  # fmt: skip
    assert float(queue_contrastive_loss(x, y, xk, yk, 0, queue, 0.1)) == pytest.approx(float(want), abs=1e-6)


def test_momentum_weights_follow_the_online_weights_by_the_ema_formula(tiny_data, tmp_path, xlco_cfg):
    task = _queue_task(xlco_cfg, tiny_data, tmp_path, momentum=0.9)
    mom = task.objectives["xlco"].momentum
    online = dict(task.model.named_parameters())
    assert all(torch.equal(p, online[k]) for k, p in mom.encoder.named_parameters())  # starts as a copy
    opt = torch.optim.SGD(task.model.parameters(), lr=0.5)
    for step in range(3):
        before = {k: p.detach().clone() for k, p in mom.encoder.named_parameters()}
        now = {k: p.detach().clone() for k, p in task.model.named_parameters()}
        out = task.train_batch(2 * step + 1)  # update (with the weights as they are now), then keys
        for k, p in mom.encoder.named_parameters():
            assert torch.allclose(p, 0.9 * before[k] + 0.1 * now[k], rtol=0, atol=1e-6), k  # float rounding only
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        assert all(p.grad is None for p in mom.parameters())  # keys carry no gradient
    moved = [k for k, p in mom.encoder.named_parameters() if not torch.equal(p, before[k])]
    assert moved and all(not torch.equal(p, online[k]) for k, p in mom.encoder.named_parameters() if k in moved)
    mom.train()
    assert not mom.encoder.training  # dropout stays off in the momentum encoder


def test_xlco_with_a_queue_resumes_exactly_and_keeps_the_momentum_encoder_out_of_the_model(
    tiny_data, xlco_cfg, straight_and_resumed
):
    q = ["objectives.xlco_queue=12", "objectives.xlco_momentum=0.9"]  # wraps at the 2nd XLCo step
    runs = straight_and_resumed(lambda out, steps: xlco_cfg(tiny_data, out, steps, q), 6)
    straight, a, b = runs.straight, runs.straight_losses, runs.split_losses
    assert a == b and [s for s, v in a.items() if "loss/xlco/en-fr" in v] == [3, 6]  # mlm, tlm, xlco turns
    for name in ("model", "xlco_momentum"):
        assert runs.same_tensors(f"checkpoints/step-00000006/{name}.safetensors"), name
    m = load_file(str(straight / "checkpoints/step-00000006/xlco_momentum.safetensors"))
    assert int(m["filled"]) == 12 and int(m["ptr"]) == 4  # 2 XLCo steps of 8 pairs: wrapped once
    final = load_file(str(straight / "final/model.safetensors"))
    assert not torch.equal(m["encoder.embeddings.weight"], final["embeddings.weight"])  # lags behind
    # the pretrained model is the online model only, as without a queue
    assert not (straight / "final/xlco_momentum.safetensors").exists()
    assert final.keys() == load_file(str(straight / "checkpoints/step-00000006/model.safetensors")).keys()
    assert not any(k.startswith("encoder.") or k in ("queue", "ptr") for k in final)


def test_bad_queue_settings_are_config_errors_naming_the_field(tiny_data, tmp_path, xlco_cfg):
    with pytest.raises(ConfigError, match=r"objectives\.xlco_queue: must be within \[0, inf\) \(got -1\)"):
        xlco_cfg(tiny_data, tmp_path / "r", 1, ["objectives.xlco_queue=-1"])
    with pytest.raises(ConfigError, match=r"objectives\.xlco_momentum: must be within \[0, 1\] \(got 1\.5\)"):
        xlco_cfg(tiny_data, tmp_path / "r", 1, ["objectives.xlco_momentum=1.5"])


def _queue_ddp_worker(rank, world, port, x, y, xk, yk, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        lo, hi = (0, 6) if rank == 0 else (6, 11)  # uneven ranks
        enc = MomentumEncoder(torch.nn.Linear(2, 2), size=8, dim=x.shape[1], momentum=0.5)
        enc.enqueue(-xk[:8], -yk[:8])  # some earlier keys, the same on every rank
        x_keys, offset = contrastive.gather_keys(xk[lo:hi])
        y_keys, _ = contrastive.gather_keys(yk[lo:hi])
        loss = queue_contrastive_loss(x[lo:hi], y[lo:hi], x_keys, y_keys, offset, enc.negatives(), 0.1)
        enc.enqueue(x_keys, y_keys)
        out[rank] = (float(loss), enc.queue.clone(), int(enc.ptr))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_share_the_batch_keys_and_keep_equal_queues():
    x, y = _pairs(n=11, noise=0.5)
    xk, yk = F.normalize(x + 0.05, dim=-1), F.normalize(y - 0.05, dim=-1)
    out = mp.Manager().dict()
    mp.spawn(_queue_ddp_worker, args=(2, _free_port(), x, y, xk, yk, out), nprocs=2, join=True)
    one = MomentumEncoder(torch.nn.Linear(2, 2), size=8, dim=x.shape[1], momentum=0.5)
    one.enqueue(-xk[:8], -yk[:8])
    whole = queue_contrastive_loss(x, y, xk, yk, 0, one.negatives(), 0.1)
    one.enqueue(xk, yk)
    assert (6 * out[0][0] + 5 * out[1][0]) / 11 == pytest.approx(float(whole), abs=1e-5)
    assert torch.equal(out[0][1], out[1][1]) and torch.equal(out[0][1], one.queue) and out[0][2] == int(one.ptr)


@pytest.mark.slow
def test_torchrun_pretrain_with_a_queue_leaves_the_momentum_encoder_out_of_ddp(
    tiny_data, tmp_path, tiny_config_overrides
):
    import json
    import subprocess
    import sys

    out = tmp_path / "run"
    over = [*tiny_config_overrides(tiny_data, out, 3), 'objectives.xlco=["en-fr"]', "objectives.xlco_batch_size=4"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "xlm",
           "pretrain", *over, "objectives.xlco_queue=32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    m = load_file(str(out / "checkpoints/step-00000003/xlco_momentum.safetensors"))
    assert 4 < int(m["filled"]) <= 8  # one XLCo step: up to 4 pairs from each of the 2 ranks
    assert json.loads((out / "checkpoints/step-00000003/train_state.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_the_negatives_benchmark_runs_tiny(tiny_data, tmp_path, capsys, monkeypatch):
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "xlco_negatives.py"
    spec = importlib.util.spec_from_file_location("xlco_negatives", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "xlco_negatives", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    out = tmp_path / "curves.json"
    args = [str(tiny_data), "--minutes", "0.02", "--eval-every", "0.6", "--chunk", "2", "--batch", "8", "--queue", "16",
            "--threads", "1", "data.max_len=30", "data.bptt=32", "model.emb_dim=32", "model.n_layers=1",
            "model.n_heads=2", "model.max_positions=64", "eval.max_pairs=16", "--json", str(out)]  # fmt: skip
    assert bench.main(args) == 0
    curves = json.loads(out.read_text())
    assert set(curves) == {"in-batch", "queue16"}
    assert all(c[0][1] == 0 and c[-1][0] >= 1.2 and c[-1][1] > 0 for c in curves.values())
    assert "p@1 per CPU-minute" in capsys.readouterr().out


def test_xlco_on_several_layers_and_with_more_turns(tiny_data, tmp_path, xlco_cfg):
    """One loss per layer (averaged); xlco_turns gives XLCo that many turns in each round."""
    cfg = xlco_cfg(
        tiny_data,
        tmp_path / "r",
        1,
        ['objectives.mlm=["en"]', "objectives.xlco_layers=[0, -1]", "objectives.xlco_turns=2"],
    )
    task = PretrainTask(cfg, seed=0)
    assert task.kinds == ["mlm", "xlco", "xlco"]
    out = task.train_batch(1)
    out.loss.backward()
    assert (
        task.model.embeddings.weight.grad.abs().sum() > 0 and task.model.layers[1].ffn.lin2.weight.grad.abs().sum() > 0
    )
    assert task.model_info().extra["sentence_embedding"] == {"pooling": "mean", "layers": [0, -1]}
    one = PretrainTask(
        xlco_cfg(tiny_data, tmp_path / "r", 1, ['objectives.mlm=["en"]', "objectives.xlco_layers=[0]"]), seed=0
    )
    one.train_batch(1).loss.backward()  # only the embeddings are pooled: the blocks get a zero gradient
    assert (
        one.model.embeddings.weight.grad.abs().sum() > 0 and one.model.layers[1].ffn.lin2.weight.grad.abs().sum() == 0
    )
