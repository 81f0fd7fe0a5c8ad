"""XLCo (cross-lingual contrast) and the objective registry."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_config_overrides, train_losses
from safetensors.torch import load_file

from xlm.config import ConfigError, load_config
from xlm.objectives.contrastive import contrastive_loss
from xlm.tasks.pretraining import PretrainConfig, PretrainTask
from xlm.training.runner import run_training


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


def _cfg(data, out, steps, extra=()):
    over = [*tiny_config_overrides(data, out, steps), 'objectives.xlco=["en-fr"]', "objectives.xlco_batch_size=8"]
    return load_config(PretrainConfig, None, [*over, *extra])


def test_xlco_trains_alongside_mlm_tlm_and_resumes_exactly(tiny_data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_training(_cfg(tiny_data, straight, 6))
    run_training(_cfg(tiny_data, split, 3))
    run_training(_cfg(tiny_data, split, 6), resume="latest")
    a, b = train_losses(straight), train_losses(split)
    assert a == b and any("loss/xlco/en-fr" in v for v in a.values())
    wa = load_file(str(straight / "checkpoints/step-00000006/model.safetensors"))
    wb = load_file(str(split / "checkpoints/step-00000006/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_xlco_lowers_its_loss_and_reports_validation_retrieval(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, tmp_path / "r", 1, ['objectives.mlm=["en"]', "objectives.xlco_layer=1"])
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


def test_xlco_bad_input_is_a_one_line_error(tiny_data, tmp_path):
    import shutil

    no_pairs = tmp_path / "data"
    shutil.copytree(tiny_data, no_pairs)
    for f in no_pairs.glob("train.en-fr.*"):
        f.unlink()
    with pytest.raises(ConfigError, match=r"objectives\.xlco: 'fr-en' has no parallel training data"):
        PretrainTask(_cfg(no_pairs, tmp_path / "r", 1, ['objectives.xlco=["fr-en"]', 'objectives.mlm=["en"]']), seed=0)
    with pytest.raises(ConfigError, match=r"xlco takes pairs"):
        _cfg(tiny_data, tmp_path / "r", 1, ['objectives.xlco=["en"]'])
    with pytest.raises(ConfigError, match=r"objectives\.xlco_layer=5: the model has layers 0 \(embeddings\) \.\. 2"):
        PretrainTask(_cfg(tiny_data, tmp_path / "r", 1, ["objectives.xlco_layer=5"]), seed=0)
    with pytest.raises(ConfigError, match=r"objectives\.xlco_pooling"):
        _cfg(tiny_data, tmp_path / "r", 1, ['objectives.xlco_pooling="max"'])


def test_an_objective_registered_in_a_few_lines_runs_in_the_trainer(tiny_data, tmp_path):
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
            loss, n = super().loss(model, source, device)
            return 2 * loss, n

    try:
        run = tmp_path / "r"
        run_training(load_config(PretrainConfig, None, tiny_config_overrides(tiny_data, run, 4)))
        names = {k for v in train_losses(run).values() for k in v}
        assert "loss/louder/en" in names and "loss/mlm/en" in names or "loss/mlm/fr" in names
    finally:
        unregister("louder")
