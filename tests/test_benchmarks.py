"""The benchmark scripts run at a tiny size (no timing is asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_train_throughput_runs_tiny(tmp_path):
    bench = load("train_throughput")
    out = tmp_path / "rows.json"
    args = ["--shapes", "tiny", "--repeats", "1", "--no-memory", "--precision", "fp32,bf16", "--json", str(out)]
    assert bench.main([*args, "--plot", str(tmp_path / "c.png")]) == 0
    rows = json.loads(out.read_text())
    assert {(r["mode"], r["precision"]) for r in rows} == {(m, p) for m in bench.MODES for p in ("fp32", "bf16")}
    assert all(r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 and r["flops_per_token"] > 0 for r in rows)
    assert (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.slow
def test_xlm_bench_takes_the_shape_of_a_config(tiny_data, tmp_path, capsys):
    """`xlm bench --config` benches the model a pretraining config trains, at its batch shape,
    with the prepared data's vocabulary; peak memory comes from child processes."""
    from xlm.cli import main
    from xlm.data.dataset import PreparedData

    cfg = tmp_path / "small.toml"
    cfg.write_text(f'[data]\npath = "{tiny_data}"\nbptt = 24\nbatch_size = 3\n'
                   "[model]\nemb_dim = 32\nn_layers = 1\nn_heads = 2\nattention_dropout = 0.1\n"
                   '[objectives]\nmlm = ["en", "fr"]\n')  # fmt: skip
    out = tmp_path / "rows.json"
    assert (
        main(
            [
                "bench",
                "--config",
                str(cfg),
                "model.n_layers=2",
                "--modes",
                "train",
                "--repeats",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())
    assert (row["shape"], row["mode"], row["precision"], row["device"]) == ("small", "train", "fp32", "cpu")
    assert row["ours_peak_mb"] > 0 and row["hf_peak_mb"] > 0
    header = capsys.readouterr().out.splitlines()[0]
    vocab = len(PreparedData.open(tiny_data).vocab)
    assert f"32 dim, 2 layers, 2 heads, {vocab:,} vocabulary" in header and "3 x 24 tokens" in header
    assert "attention dropout 0.1" in header


def test_xlm_bench_refuses_what_it_cannot_compare(tmp_path, capsys):
    from xlm.cli import main

    cfg = tmp_path / "wide.toml"
    cfg.write_text("[model]\nemb_dim = 32\nffn_dim = 64\n")
    assert main(["bench", "--config", str(cfg), "--repeats", "1"]) == 1
    assert "ffn_dim=64" in capsys.readouterr().err
    assert main(["bench", "--shapes", "tiny,huge", "--repeats", "1"]) == 1
    assert "huge" in capsys.readouterr().err
    assert main(["bench", "--shapes", "tiny", "--precision", "tf32", "--repeats", "1", "--no-memory"]) == 1
    assert "tf32" in capsys.readouterr().err
    assert main(["bench", "data.bptt=8"]) == 1
    assert "need --config" in capsys.readouterr().err


def test_batch_pipeline_runs_on_tiny_data(tiny_data, tiny_config_overrides, capsys):
    bench = load("batch_pipeline")
    bench.make_task = lambda data: _tiny_task(tiny_config_overrides, data)
    assert bench.main(["--data", str(tiny_data), "--batches", "3", "--tile", "0"]) == 0
    out = capsys.readouterr().out
    assert "mlm:" in out and "tlm:" in out and "tokens/s" in out


def test_tiled_corpus_reads_back(tiny_data, tmp_path):
    from xlm.data.dataset import PreparedData

    bench = load("batch_pipeline")
    bench.tile_corpus(tiny_data, tmp_path / "big", 3)
    small, big = PreparedData.open(tiny_data), PreparedData.open(tmp_path / "big")
    a, b = small.mono("train", "en"), big.mono("train", "en")
    assert len(b) == 3 * len(a) and b.n_tokens == 3 * a.n_tokens
    assert list(b.sentence(len(a) + 5)) == list(a.sentence(5))
    assert len(big.para("train", "en", "fr")) == 3 * len(small.para("train", "en", "fr"))


def _tiny_task(tiny_config_overrides, data):
    from xlm.config import load_config
    from xlm.tasks.pretraining import PretrainConfig, PretrainTask

    return PretrainTask(load_config(PretrainConfig, None, tiny_config_overrides(data, data.parent / "unused")), seed=0)


def test_decode_throughput_runs_tiny(capsys):
    bench = load("decode_throughput")
    assert bench.main(["--tiny", "--lengths", "6", "--repeats", "1", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "greedy" in out and "beam 4" in out
    assert (
        bench.main(["--tiny", "--lengths", "6", "--repeats", "1", "--batch", "2", "--beams", "1,3", "--cross-reorder"])
        == 0
    )
    out = capsys.readouterr().out
    assert "all re-indexed" in out and "beam 3" in out and "greedy" not in out


def test_dropout_ab_runs_tiny_and_puts_our_dropout_back(capsys):
    from xlm.model import transformer

    ours = transformer.dropout
    bench = load("dropout_ab")
    assert bench.main(["--cases", "tiny:train,tiny:tlm", "--steps", "1"]) == 0
    assert transformer.dropout is ours
    assert capsys.readouterr().out.count("ours/F.dropout") == 2
