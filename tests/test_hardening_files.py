"""Work that is never lost or replaced: the one atomic writer (links, standard output,
permissions, NaN), used run and prepared folders, resume from the saved config, output paths
checked before work, Ctrl-C, and standard output kept for machine-readable results."""

from __future__ import annotations

import json
import os
import signal
import stat
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from xlm import checkpoint_io as ckpt
from xlm import fileio
from xlm.cli import main
from xlm.config import ConfigError, load_config
from xlm.tasks import classification, pretraining
from xlm.tasks.pretraining import PretrainConfig, run_training
from xlm.training.runner import RESUME_MAY_CHANGE

pytestmark = pytest.mark.usefixtures("restore_threads")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def pretrain_args(tiny_config_overrides):
    """Factory: ``pretrain_args(data, out, steps=4)``, the overrides of a tiny one-thread run."""

    def make(data: Path, out: Path, steps: int = 4) -> list[str]:
        return [*tiny_config_overrides(data, out, steps), "train.threads=1"]

    return make


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory, pretrain_args) -> Path:
    """A finished 4-step pretraining run (checkpoints at steps 3 and 4, final/)."""
    n = torch.get_num_threads()
    out = tmp_path_factory.mktemp("hardening") / "run"
    try:
        run_training(load_config(PretrainConfig, None, pretrain_args(tiny_data, out)))
    finally:
        torch.set_num_threads(n)
    return out


# --------------------------------------------------------------------------- the atomic writer


def test_writes_go_through_a_symbolic_link_to_its_target(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    fileio.write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "sub" / "made.txt")
    fileio.write_atomic(dangling, "x")
    assert dangling.is_symlink() and (tmp_path / "sub" / "made.txt").read_text() == "x"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    folder_link = tmp_path / "best"
    folder_link.symlink_to(folder)
    fileio.replace_directory(folder_link, lambda d: (d / "w.bin").write_bytes(b"new"))
    assert folder_link.is_symlink() and (folder / "w.bin").read_bytes() == b"new"


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_dash_and_dev_stdout_mean_standard_output(name, capfd):
    fileio.write_json(name, {"b": [1.5, 2]})
    out = capfd.readouterr().out
    assert json.loads(out) == {"b": [1.5, 2]}
    assert not Path("-").exists(), "no file named '-'"
    if name == "/dev/stdout" and os.path.islink("/dev/stdout"):
        assert os.readlink("/dev/stdout") == "/proc/self/fd/1", "the system's link is never replaced"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_and_folders_get_the_permissions_of_the_umask(tmp_path, umask, monkeypatch):
    monkeypatch.setattr(fileio, "_umask", lambda: umask)
    old = os.umask(umask)
    try:
        f = fileio.write_atomic(tmp_path / "a.json", "{}")
        d = ckpt.save_checkpoint(tmp_path / "ck", lambda t: fileio.write_atomic(t / "model.safetensors", b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((d / "model.safetensors").stat().st_mode) == 0o666 & ~umask
    os.chmod(f, 0o640)
    fileio.write_atomic(f, "{}")  # a replaced file keeps its permissions
    assert stat.S_IMODE(f.stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed half-way")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(TypeError):  # not JSON: nothing written at all
        fileio.write_json(path, {"x": object()})
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_killed_writer_s_temporary_folder_is_removed_by_the_next_write(tmp_path, capsys):
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(gone.stdout), os.getpid()  # a process that has exited; this one
    for pid in (dead, alive):
        (tmp_path / f".data.tmp-{pid}-x1").mkdir()
        (tmp_path / f".data.tmp-{pid}-x1" / "train.en.bin").write_bytes(b"half")
    (tmp_path / ".other.tmp-1-x1").mkdir()  # another folder's: not ours to judge
    fileio.replace_directory(tmp_path / "data", lambda d: (d / "done").write_text("ok"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f".data.tmp-{alive}-x1", ".other.tmp-1-x1", "data"]
    assert f".data.tmp-{dead}-x1: left unfinished by a process that was killed" in capsys.readouterr().err


def test_json_has_no_nan_or_infinity_and_says_which_keys(tmp_path, capsys):
    path = fileio.write_json(tmp_path / "m.json", {"ppl": {"en": float("nan"), "fr": 3.0}, "acc": [float("inf"), 1]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"ppl": {"en": None, "fr": 3.0}, "acc": [None, 1]}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ppl.en" in err and "acc[0]" in err and "null" in err


# --------------------------------------------------------------------------- used folders


def test_finetune_refuses_a_folder_that_holds_a_run(tiny_run, tmp_path, capsys):
    train = tmp_path / "train.en.tsv"
    train.write_text("".join(f"{'high' if i % 2 else 'low'}\te{i % 40}</w> e{(i * 7) % 40}</w>\n" for i in range(40)))
    before = snapshot(tiny_run)
    argv = ["finetune", "classify", str(tiny_run / "final"), "--train", f"en={train}", "--pretokenized",
            "--out", str(tiny_run), "train.progress=false"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"xlm finetune: error: {tiny_run} already holds a run" in err and "--resume" in err
    assert snapshot(tiny_run) == before


def _raw_corpus(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.en").write_text("the cat sat on the mat .\na dog ran .\n" * 20)
    (raw / "train.fr").write_text("le chat est sur le tapis .\nun chien court .\n" * 20)
    (raw / "valid.en").write_text("the dog sat .\n")
    return raw


def test_prepare_into_a_prepared_folder_is_up_to_date_or_refused(tmp_path, capsys):
    raw, out = _raw_corpus(tmp_path), tmp_path / "data"
    argv = ["prepare", str(raw), str(out), "--vocab-size", "60", "--workers", "1"]
    assert main(argv) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(argv) == 0  # same settings, same inputs: nothing to do
    assert "is up to date" in capsys.readouterr().err
    assert snapshot(out) == before
    assert main([*argv[:-4], "--vocab-size", "70", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "already holds prepared data made otherwise (vocab_size_requested: 60 -> 70)" in err and "--overwrite" in err
    (raw / "valid.en").write_text("the dog ran .\n")  # same size, other bytes: the hash notices
    assert main(argv) == 1 and "input valid.en changed" in capsys.readouterr().err
    assert snapshot(out) == before
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "prepare.json").read_text())["fingerprint"]["inputs"]["valid.en"]["bytes"] == 14
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main([*argv[:2], str(tmp_path / "mine"), *argv[3:], "--overwrite"]) == 1
    assert "holds no prepare.json" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").is_file()


def test_interrupted_prepare_exits_130_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from xlm.data import prepare as prep

    raw, out = _raw_corpus(tmp_path), tmp_path / "data"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "binarize", interrupted)
    assert main(["prepare", str(raw), str(out), "--vocab-size", "60", "--workers", "1"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "xlm prepare: interrupted: stopped by Ctrl-C" and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no partial output, no temporary folder


# --------------------------------------------------------------------------- resume remembers its run


def test_resume_reads_the_saved_config_and_refuses_changes_to_model_or_data(tiny_data, tiny_run, tmp_path, capsys):
    run = Path(tmp_path / "run")
    import shutil

    shutil.copytree(tiny_run, run)
    (run / "final").rename(tmp_path / "old_final")  # as if interrupted after step 4
    saved = (run / "config.toml").read_text()
    argv = ["pretrain", f'train.out_dir="{run}"', "model.emb_dim=64", "data.bptt=16", "--resume"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot change the model, the data or the optimizer" in err
    assert "data.bptt: saved 32, now 16" in err and "model.emb_dim: saved 32, now 64" in err
    assert (run / "config.toml").read_text() == saved, "config.toml is not touched before the check passes"
    # only the out folder and the harmless change: every other setting comes from config.toml
    # (--resume takes an optional path: an override right after it is still an override)
    assert main(["pretrain", "--resume", "train.max_steps=6", f'train.out_dir="{run}"', "train.log_every=2"]) == 0
    out, err = capsys.readouterr()
    assert "resumed from" in err and "train.max_steps changed from 4 to 6" in err
    assert json.loads(out)  # the metrics, alone on standard output
    cfg = tomllib.loads((run / "config.toml").read_text())
    assert cfg["train"]["max_steps"] == 6 and cfg["train"]["log_every"] == 2 and cfg["model"]["emb_dim"] == 32
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r["type"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == 4
    assert resumed[0]["changed"]["train.max_steps"] == [4, 6] and resumed[0]["changed"]["train.log_every"] == [1, 2]
    assert max(r["step"] for r in records) == 6
    assert {"train.max_steps", "train.max_minutes", "train.eval_every", "train.save_every"} <= set(RESUME_MAY_CHANGE)


# --------------------------------------------------------------------------- outputs checked first


def test_output_paths_are_checked_before_any_work(tiny_run, tmp_path, capsys, monkeypatch, tiny_config_overrides):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")

    def never(*a, **k):
        raise AssertionError("work started before the output paths were checked")

    monkeypatch.setattr(classification, "load_pretrained", never)
    monkeypatch.setattr(pretraining.PretrainTask, "__init__", never)
    train = tmp_path / "t.tsv"
    train.write_text("a\tb\n")
    argv = ["finetune", "classify", str(tiny_run / "final"), "--train", f"en={train}", "--out", str(tmp_path / "o")]
    assert main([*argv, "--json", str(blocker / "x.json")]) == 1
    assert (
        f"output file {blocker / 'x.json'}: cannot be created, {blocker} is a file, not a folder"
        in capsys.readouterr().err
    )
    assert main([*argv, f'output.plot_file="{tmp_path}"']) == 1
    assert "is a folder, not a file" in capsys.readouterr().err
    assert main(["pretrain", *tiny_config_overrides(Path("x"), blocker, 2)]) == 1
    assert f"run folder {blocker}: is a file, not a folder" in capsys.readouterr().err
    assert main(["evaluate", "ppl", str(tiny_run / "final"), "--data", "x", "--json", str(tmp_path)]) == 1
    assert "is a folder, not a file" in capsys.readouterr().err
    monkeypatch.setattr(fileio.os, "access", lambda *a, **k: False)  # a read-only folder (the tests run as root)
    assert main([*argv, "--json", str(tmp_path / "ro" / "x.json")]) == 1
    assert "no permission to write in" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- interrupts and stdout


def test_ctrl_c_in_pretraining_saves_then_exits_130(tiny_data, tmp_path, capsys, monkeypatch, pretrain_args):
    original = pretraining.PretrainTask.train_batch

    def interrupted(self, micro_step):
        if micro_step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, micro_step)

    monkeypatch.setattr(pretraining.PretrainTask, "train_batch", interrupted)
    run = tmp_path / "run"
    assert main(["pretrain", *pretrain_args(tiny_data, run, 6)]) == 130
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("xlm pretrain: interrupted: received signal 2: saved step 3")
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-00000003"]
    assert not (run / "final").exists()


def test_ctrl_c_in_finetuning_saves_and_never_evaluates_the_test_set(tiny_run, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    lines = [f"{'high' if (h := rng.random() < 0.5) else 'low'}\t" + " ".join(
        f"e{w}</w>" for w in rng.integers(20 if h else 0, 40 if h else 20, 4)) for _ in range(60)]  # fmt: skip
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    original = classification.ClassifyTask.train_batch
    tested = []

    def interrupted(self, micro_step):
        if micro_step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, micro_step)

    monkeypatch.setattr(classification.ClassifyTask, "train_batch", interrupted)
    monkeypatch.setattr(classification, "evaluate_set", lambda *a, **k: tested.append(1) or (0.0, None))
    out = tmp_path / "ft"
    argv = ["finetune", "classify", str(tiny_run / "final"), "--train", f"en={tmp_path / 'train.tsv'}",
            "--test", f"fr={tmp_path / 'train.tsv'}", "--pretokenized", "--out", str(out), "--json", "-",
            "data.max_tokens=128", "data.max_len=32", "train.progress=false", "train.threads=1", "train.max_steps=5"]  # fmt: skip
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert captured.out == "" and "xlm finetune: interrupted: received signal 2: saved step 2" in captured.err
    assert tested == [] and not (out / "results.json").exists()
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-00000002"]
    monkeypatch.setattr(classification.ClassifyTask, "train_batch", original)
    assert main([*argv, "--resume"]) == 0  # resume needs no settings repeated that it saved
    printed = capsys.readouterr().out
    assert set(json.loads(printed)) == {"fr", "average"}, "with --json -, standard output holds the JSON alone"
    assert tested and (out / "results.json").is_file()


def test_pretrain_metrics_alone_on_standard_output(tiny_data, tmp_path, capsys, pretrain_args):
    assert main(["pretrain", *pretrain_args(tiny_data, tmp_path / "run", 2)]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)
    assert "valid/mlm/en/ppl" in metrics and "model:" in err


def test_config_errors_on_resume_name_the_saved_file(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("[model]\nemb_dims = 3\n")
    assert main(["pretrain", f'train.out_dir="{run}"', "--resume"]) == 1
    err = capsys.readouterr().err
    assert f"{run / 'config.toml'}" in err and "model.emb_dims: unknown field" in err
    with pytest.raises(ConfigError):
        load_config(PretrainConfig, None, ["model.emb_dims=3"])


def test_json_to_standard_output_keeps_tables_and_status_on_stderr(tiny_run, tiny_data, capsys):
    argv = ["evaluate", "ppl", str(tiny_run / "final"), "--data", str(tiny_data), "--max-rows", "2", "--device", "cpu"]
    assert main([*argv, "--json", "-"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)  # nothing but the JSON
    assert metrics and "MLM ppl" in err  # the table went to stderr
    assert main(argv) == 0
    assert "MLM ppl" in capsys.readouterr().out  # without --json -, the table is the output
