"""Checkpoints resume exactly: N steps straight == N/2 steps + resume + N/2 steps."""

import pytest

from xlm.checkpoint_io import verify_checkpoint
from xlm.config import ConfigError
from xlm.tasks.pretraining import run_training


@pytest.fixture
def cfg(pretrain_config):
    """Factory: ``cfg(data, out, steps, extra=())``, a tiny MLM+TLM+CLM run's config."""
    return lambda data, out, steps, extra=(): pretrain_config(data, out, steps, 'objectives.clm=["fr"]', *extra)


def test_resume_is_exact(tiny_data, cfg, straight_and_resumed):
    runs = straight_and_resumed(lambda out, steps: cfg(tiny_data, out, steps), 6)
    a, b = runs.straight_losses, runs.split_losses
    assert sorted(a) == list(range(1, 7)) and a == b
    assert {k.split("/")[1] for v in a.values() for k in v} >= {"mlm", "tlm", "clm"}
    assert runs.same_tensors("checkpoints/step-00000006/model.safetensors")


def test_resume_falls_back_to_newest_intact_checkpoint(tiny_data, tmp_path, capsys, cfg):
    run = tmp_path / "run"
    run_training(cfg(tiny_data, run, 6))
    newest = run / "checkpoints/step-00000006/model.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum mismatch"):
        verify_checkpoint(newest.parent)
    run_training(cfg(tiny_data, run, 6), resume="latest")
    out = capsys.readouterr().err
    assert "step-00000006 is damaged" in out and "resumed from" in out and "step-00000003" in out


def test_config_error_names_the_field(tiny_data, tmp_path, cfg):
    with pytest.raises(ConfigError, match=r"objectives\.mlm: 'xx' is not a language"):
        run_training(cfg(tiny_data, tmp_path / "r", 2, ['objectives.mlm=["en","xx"]']))
    with pytest.raises(ConfigError, match=r"model\.n_layer: unknown field"):
        cfg(tiny_data, tmp_path / "r", 2, ["model.n_layer=3"])
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        cfg(tiny_data, tmp_path / "r", 2, ["train.max_steps=many"])


def test_a_fresh_run_refuses_a_used_run_folder_and_changes_nothing(tiny_data, tmp_path, cfg, train_losses):
    from xlm.training.trainer import TrainingError

    run = tmp_path / "run"
    run_training(cfg(tiny_data, run, 2))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(
        TrainingError, match=r"already holds a run \(metrics.jsonl, checkpoints, final\): continue it with --resume"
    ):
        run_training(cfg(tiny_data, run, 4))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    run_training(cfg(tiny_data, run, 4), resume="latest")  # continuing it is the way
    assert sorted(train_losses(run)) == [1, 2, 3, 4]


def test_train_records_average_every_update_since_the_last_and_resume_mid_window(
    tiny_data, tmp_path, cfg, train_losses
):
    """log_every=4 with objectives taking turns: each record holds the mean loss of every
    objective trained since the previous record (not only the logged update's), the last
    update of a run is recorded, and a run resumed from a checkpoint taken in the middle of a
    window (step 6) writes the same records as the run that went straight on."""
    import shutil

    single = tmp_path / "single"
    run_training(cfg(tiny_data, single, 9, ["train.log_every=1"]))
    per_step = train_losses(single)
    straight = tmp_path / "straight"
    run_training(cfg(tiny_data, straight, 9, ["train.log_every=4", "train.keep_last=3"]))
    logged = train_losses(straight)
    assert sorted(logged) == [4, 8, 9]
    for step, (lo, hi) in {4: (1, 4), 8: (5, 8), 9: (9, 9)}.items():
        window = [per_step[s] for s in range(lo, hi + 1)]
        names = {k for losses in window for k in losses}
        assert set(logged[step]) == names
        for k in names:
            values = [losses[k] for losses in window if k in losses]
            assert logged[step][k] == pytest.approx(sum(values) / len(values), rel=1e-6)
    assert len(logged[4]) > 1  # several objectives in one record
    again = tmp_path / "again"
    shutil.copytree(straight, again)
    run_training(cfg(tiny_data, again, 9, ["train.log_every=4"]), resume=str(again / "checkpoints/step-00000006"))
    assert train_losses(again) == logged


def test_resume_with_other_trainable_weights_is_a_clear_error(tiny_data, tmp_path, monkeypatch, cfg):
    """A checkpoint whose optimizer state has another set of trainable weights (e.g. written
    before a weight was frozen) is refused with an error naming it, not a traceback."""
    from xlm.tasks import pretraining
    from xlm.training.trainer import TrainingError

    run = tmp_path / "run"
    run_training(cfg(tiny_data, run, 3))
    init = pretraining.PretrainTask.__init__

    def frozen_bias(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.model.pred_bias.requires_grad_(False)

    monkeypatch.setattr(pretraining.PretrainTask, "__init__", frozen_bias)
    with pytest.raises(
        TrainingError, match=r"step-00000003: its optimizer state does not fit this run's trainable weights"
    ):
        run_training(cfg(tiny_data, run, 6), resume="latest")
