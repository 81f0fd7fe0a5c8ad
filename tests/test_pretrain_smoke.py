from xlm.config import load_config
from xlm.tasks.pretraining import PretrainConfig
from xlm.training.runner import run_training

from conftest import tiny_config_overrides


def test_pretrain_runs(tiny_data, tmp_path):
    cfg = load_config(PretrainConfig, None, tiny_config_overrides(tiny_data, tmp_path / "run"))
    metrics = run_training(cfg)
    assert "valid/mlm/en/ppl" in metrics and "valid/tlm/en-fr/ppl" in metrics
