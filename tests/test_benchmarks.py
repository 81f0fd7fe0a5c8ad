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
    assert bench.main(["--shapes", "tiny", "--repeats", "1", "--no-memory", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["mode"] for r in rows} == {"train", "tlm", "infer"}
    assert all(r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 and r["flops_per_token"] > 0 for r in rows)
