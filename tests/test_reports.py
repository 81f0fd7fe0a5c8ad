from pathlib import Path

import pytest

from xlm.config import load_config
from xlm.reports import format_table, plot_training
from xlm.tasks.pretraining import PretrainConfig, run_training

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if not p.name.startswith(("mt_", "classify"))], ids=lambda p: p.name
)
def test_shipped_pretrain_configs_validate(path):
    cfg = load_config(PretrainConfig, path)
    assert cfg.objectives.mlm or cfg.objectives.clm


def test_table_alignment():
    t = format_table(["lang", "ppl"], [["en", 12.345], ["fr", float("nan")]])
    lines = t.splitlines()
    assert lines[0].split() == ["lang", "ppl"] and "12.35" in lines[2] and lines[3].endswith("-")


def test_plot_run_writes_pngs(tiny_data, tiny_config_overrides, tmp_path):
    run = tmp_path / "run"
    over = tiny_config_overrides(tiny_data, run, steps=4) + ["train.eval_every=2", "train.eval_at_start=true"]
    run_training(load_config(PretrainConfig, None, over))
    paths = plot_training(run)
    assert {p.name for p in paths} == {"loss.png", "ppl.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    """Temporary files and folders are created owner-only (mkstemp 0600, mkdtemp 0700); what is
    renamed into place has the permissions open() and mkdir() would give under the umask."""
    import os

    from xlm.checkpoint_io import save_checkpoint
    from xlm.reports import write_atomic

    mask = os.umask(0o022)
    os.umask(mask)
    f = write_atomic(tmp_path / "a.json", "{}")
    d = save_checkpoint(tmp_path / "ckpt", lambda tmp: (tmp / "w.bin").write_bytes(b"x"))
    assert f.stat().st_mode & 0o777 == 0o666 & ~mask
    assert d.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (d / "w.bin").stat().st_mode & 0o777 == 0o666 & ~mask
