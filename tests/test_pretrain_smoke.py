from xlm.config import load_config
from xlm.tasks.pretraining import PretrainConfig, run_training


def test_pretrain_runs(tiny_data, tiny_config_overrides, tmp_path):
    cfg = load_config(PretrainConfig, None, tiny_config_overrides(tiny_data, tmp_path / "run"))
    metrics = run_training(cfg)
    assert "valid/mlm/en/ppl" in metrics and "valid/tlm/en-fr/ppl" in metrics


def test_objective_weight_scales_the_gradient_not_the_logged_loss(tiny_data, tiny_config_overrides, tmp_path):
    """tlm_weight=0.25: the task reports the same loss as with weight 1 (what metrics.jsonl
    logs and perplexity comes from), and hands the weight to the trainer separately."""
    import torch

    from xlm.tasks.pretraining import PretrainTask

    def first_tlm(weight: float):
        cfg = load_config(
            PretrainConfig, None, [*tiny_config_overrides(tiny_data, tmp_path), f"objectives.tlm_weight={weight}"]
        )
        torch.manual_seed(0)  # the same initial weights
        task = PretrainTask(cfg, seed=0)
        task.model.eval()  # no dropout: the same loss for the same batch
        for micro in range(3):
            out = task.train_batch(micro)
            if out.name.startswith("tlm/"):
                return out
        raise AssertionError("no TLM batch in the first 3 steps")

    full, quarter = first_tlm(1.0), first_tlm(0.25)
    assert full.name == quarter.name and (full.weight, quarter.weight) == (1.0, 0.25)
    assert quarter.loss.item() == full.loss.item() > 0
