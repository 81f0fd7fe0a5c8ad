"""What fine-tuning freezes, the XLM layout conversion and its errors, the feature checks of
imported configs, and the JSON files a Hugging Face directory needs."""

import json

import pytest
import torch

from xlm.config import ConfigError
from xlm.errors import CheckpointError
from xlm.interop.common import XLM_FEATURES, check_features
from xlm.interop.huggingface import read_hf_config, read_hf_vocab
from xlm.interop.layout import from_xlm_layout, to_xlm_layout
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.tasks.classification import FinetuneConfig, frozen_modules

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(arch: str) -> TransformerModel:
    torch.manual_seed(0)
    langs = {"n_langs": 3} if arch == "xlm" else {}
    cfg = ModelConfig(arch=arch, vocab_size=30, emb_dim=16, n_layers=3, n_heads=2, max_positions=32, **langs)
    return TransformerModel(cfg)


def trainable_after_freezing(model: TransformerModel, ft: FinetuneConfig) -> set[str]:
    for m in frozen_modules(model, ft):
        m.requires_grad_(False)
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["xlm", "xlmr", "bert"])
def test_freeze_embeddings_keeps_the_whole_embedding_layer(arch):
    model = tiny(arch)
    trainable = trainable_after_freezing(model, FinetuneConfig(freeze_embeddings=True))
    outside_the_blocks = {n for n, _ in model.named_parameters() if not n.startswith(("layers.", "head."))}
    assert outside_the_blocks & trainable == {"pred_bias"}  # the output bias: ClassifyTask freezes it itself
    if arch != "xlm":
        assert "token_type_embeddings.weight" in outside_the_blocks - trainable
    kept = trainable_after_freezing(tiny(arch), FinetuneConfig(freeze_embeddings=False))
    assert {"embeddings.weight", "norm_emb.weight"} <= kept
    assert ("token_type_embeddings.weight" in kept) == (arch != "xlm")


def test_frozen_blocks_below_and_above_the_layer_the_head_reads():
    trainable = trainable_after_freezing(tiny("xlm"), FinetuneConfig(freeze_embeddings=False, freeze_layers=1, layer=2))
    blocks = {name.split(".")[1] for name in trainable if name.startswith("layers.")}
    assert blocks == {"1"}  # block 0 frozen, block 2 above the head's layer unused
    for bad, field in ((FinetuneConfig(freeze_layers=4), "freeze_layers=4"), (FinetuneConfig(layer=5), "layer=5")):
        with pytest.raises(ConfigError, match=f"finetune.{field}: the model has"):
            frozen_modules(tiny("xlm"), bad)


def test_xlm_layout_round_trip_of_an_encoder_and_a_decoder():
    for model in (tiny("xlm"), TransformerModel(tiny("xlm").cfg, is_decoder=True)):
        state = model.state_dict()
        back, is_decoder = from_xlm_layout(to_xlm_layout(state, include_tied=True), "test")
        assert is_decoder == model.is_decoder
        assert set(back) == set(state)
        assert all(torch.equal(back[k], state[k]) for k in state)


def test_xlm_layout_names_missing_unused_and_untied_weights():
    theirs = to_xlm_layout(tiny("xlm").state_dict(), include_tied=True)
    with pytest.raises(CheckpointError, match=r"src: weight 'ffns.1.lin2.bias' is missing"):
        from_xlm_layout({k: v for k, v in theirs.items() if k != "ffns.1.lin2.bias"}, "src")
    with pytest.raises(CheckpointError, match=r"src: weights that our model has no place for: memory.keys"):
        from_xlm_layout({**theirs, "memory.keys": torch.zeros(2)}, "src")
    untied = {**theirs, "pred_layer.proj.weight": theirs["embeddings.weight"] + 1}
    with pytest.raises(CheckpointError, match="not tied to embeddings.weight"):
        from_xlm_layout(untied, "src")
    no_bias, _ = from_xlm_layout({k: v for k, v in theirs.items() if k != "pred_layer.proj.bias"}, "src")
    assert torch.equal(no_bias["pred_bias"], torch.zeros(30))


def test_feature_checks_name_the_option():
    check_features({"asm": False, "gelu_activation": True}, XLM_FEATURES, "cfg")
    check_features({}, XLM_FEATURES, "cfg")  # absent: the value ours needs
    with pytest.raises(CheckpointError, match=r"cfg: the model uses ReLU instead of GELU \(gelu_activation=False\)"):
        check_features({"gelu_activation": False}, XLM_FEATURES, "cfg")
    memory = (*XLM_FEATURES, ("use_memory", False, "product-key memory layers"))
    with pytest.raises(CheckpointError, match=r"product-key memory layers \(use_memory=True\), which ours does not"):
        check_features({"use_memory": True}, memory, "cfg")


def test_hf_json_files_missing_or_not_an_object(tmp_path):
    with pytest.raises(CheckpointError, match=r"config.json: missing \(not a Hugging Face model directory\)"):
        read_hf_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config.json: expected a JSON object$"):
        read_hf_config(tmp_path)
    with pytest.raises(CheckpointError, match=r"vocab.json: missing \(the tokenizer files"):
        read_hf_vocab(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps(["a"]))
    with pytest.raises(CheckpointError, match=r"vocab.json: expected a JSON object token -> id"):
        read_hf_vocab(tmp_path)


def test_batches_pad_with_the_vocabulary_s_pad_id_not_a_fixed_2():
    """SentencePiece pads with 1 and WordPiece with 0: the classifier's batches, translation
    pairs and XLCo's pair encoding take the model's (or vocabulary's) padding id."""
    import numpy as np
    from torch import nn

    from xlm.model.classifier import ClassifierHead, make_batch, set_features
    from xlm.model.transformer import model_config
    from xlm.objectives.contrastive import encode_pairs
    from xlm.objectives.translation import make_pair_batch

    rows = [np.array([0, 7, 8, 9, 2]), np.array([0, 7, 2])]
    assert make_batch(rows, [0, 0], [0, 0], pad_index=1).tokens[1, 3:].tolist() == [1, 1]
    pair = make_pair_batch(rows, rows[::-1], 0, 0, pad_index=1)
    assert pair.src[1, 3:].tolist() == [1, 1] and pair.tgt[0, 3:].tolist() == [1, 1]

    model = TransformerModel(ModelConfig(arch="xlmr", vocab_size=30, emb_dim=16, n_layers=1, n_heads=2, pad_index=1,
                                         max_positions=32, n_langs=1, use_lang_emb=False)).eval()  # fmt: skip
    wrapped = nn.Module()
    wrapped.module = model  # as DistributedDataParallel holds it
    assert model_config(model).pad_index == model_config(wrapped).pad_index == 1
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    encode_pairs(model, rows[:1], rows[1:], (0, 0), 0, "mean", torch.device("cpu"))
    head = ClassifierHead(16, 2, 0.0, "first", -1)
    set_features(model, head, rows, 0, torch.device("cpu"), max_tokens=100)
    assert len(seen) == 2  # (rows sorted by length in the second: compare the tails as a set)
    assert all(sorted(t[:, 3:].flatten().tolist()) == [1, 1, 2, 9] for t in seen)
