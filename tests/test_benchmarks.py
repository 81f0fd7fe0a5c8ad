"""The benchmark scripts run at a tiny size (no timing is asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_train_throughput_runs_tiny(tmp_path):
    bench = load("train_throughput")
    out = tmp_path / "rows.json"
    args = ["--shapes", "tiny", "--repeats", "1", "--no-memory", "--precision", "fp32,bf16", "--json", str(out)]
    assert bench.main([*args, "--plot", str(tmp_path / "c.png")]) == 0
    rows = json.loads(out.read_text())
    assert {(r["mode"], r["precision"]) for r in rows} == {(m, p) for m in bench.MODES for p in ("fp32", "bf16")}
    assert all(r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 and r["flops_per_token"] > 0 for r in rows)


def test_batch_pipeline_runs_on_tiny_data(tiny_data, capsys):
    bench = load("batch_pipeline")
    bench.make_task = lambda data: _tiny_task(data)
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


def _tiny_task(data):
    from xlm.config import load_config
    from xlm.tasks.pretraining import PretrainConfig, PretrainTask

    from conftest import tiny_config_overrides

    return PretrainTask(load_config(PretrainConfig, None, tiny_config_overrides(data, data.parent / "unused")), seed=0)


def test_decode_throughput_runs_tiny(capsys):
    bench = load("decode_throughput")
    assert bench.main(["--tiny", "--lengths", "6", "--repeats", "1", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "greedy" in out and "beam 4" in out
