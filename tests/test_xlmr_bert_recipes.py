"""The XLM-R and mBERT recipes end to end at tiny sizes: `xlm prepare` with a SentencePiece /
WordPiece vocabulary on the shipped corpus, `xlm pretrain` with model.arch = xlmr / bert (the
shipped configs, shrunk; TLM and XLCo on the XLM-R network too), the encoder's uses (embed, retrieval) on the result, and
`xlm export --to hf`: transformers loads it with no missing or unexpected weights, its
tokenizer gives our ids, and its logits equal ours on real sentences in a padded batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xlm.cli import main as cli_main
from xlm.model.pretrained import load_pretrained
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.text.tokenizer import load_tokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = {
    "en": ["The committee will meet again next Tuesday.", "She opened the window because the room was warm."],
    "fr": ["Le comité se réunira de nouveau mardi prochain.", "Elle a ouvert la fenêtre car la pièce était chaude."],
}
RECIPES = {"xlmr": ("xlmr_demo", "sentencepiece"), "bert": ("mbert_demo", "wordpiece")}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(RECIPES))
def test_recipe_pretrain_use_and_export(tmp_path, arch, capsys):
    config, tokenizer = RECIPES[arch]
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "hf"
    prepare = ["prepare", str(ROOT / "data" / "corpus"), str(data), "--tokenizer", tokenizer]
    assert cli_main([*prepare, "--vocab-size", "400", "--langs", "en,fr", "--max-lines", "300"]) == 0
    overrides = [
        f"data.path={data}", "data.bptt=32", "data.batch_size=4", "data.max_len=30", "model.emb_dim=32",
        "model.n_layers=2", "model.n_heads=2", "model.max_positions=64", 'objectives.mlm=["en","fr"]',
        "train.max_steps=4", f"train.out_dir={run}", "train.eval_every=0", "train.save_every=4",
        "train.progress=false", "train.eval_at_start=false", "train.max_minutes=0",
    ]  # fmt: skip
    if arch == "xlmr":  # the other objectives run on the variant too: TLM (restarted positions) and XLCo
        overrides += ['objectives.mlm=["en","fr","en-fr"]', 'objectives.xlco=["en-fr"]', "objectives.xlco_batch_size=8"]
    assert cli_main(["pretrain", "--config", str(ROOT / "configs" / f"{config}.toml"), *overrides]) == 0
    ckpt = run / "final"
    pre = load_pretrained(ckpt)
    assert pre.info.config.arch == arch and pre.model.lang_embeddings is None
    assert pre.info.config.pad_index == pre.vocab.specials.pad

    # the encoder's uses: sentence embeddings and retrieval on the prepared parallel split
    text = tmp_path / "fr.txt"
    text.write_text("\n".join(SENTENCES["fr"]) + "\n", encoding="utf-8")
    assert (
        cli_main(["embed", str(ckpt), "--lang", "fr", "--input", str(text), "--output", str(tmp_path / "e.npy")]) == 0
    )
    assert np.load(tmp_path / "e.npy").shape == (2, 32)
    report = tmp_path / "retrieval.json"
    args = ["evaluate", "retrieval", str(ckpt), "--prepared", str(data), "--split", "test", "--max-sentences", "20"]
    assert cli_main([*args, "--json", str(report)]) == 0
    assert json.loads(report.read_text())

    # out to transformers: no missing/unexpected weights, our ids, our logits
    assert cli_main(["export", str(ckpt), "--to", "hf", str(out)]) == 0
    capsys.readouterr()
    model, info = transformers.AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ours_tok = load_tokenizer(ckpt)
    lines = [s for lang in sorted(SENTENCES) for s in SENTENCES[lang]]
    s = pre.vocab.specials
    ours_ids = [[s.start, *ours_tok.encode(line), s.end] for line in lines]
    batch = hf_tok(lines, padding=True, return_tensors="pt")
    assert [row[: len(ids)] for row, ids in zip(batch["input_ids"].tolist(), ours_ids)] == ours_ids
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    assert not mask.all()  # a padded batch
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask.long()).logits[mask]
        ours = pre.model(ids, mask.sum(1), predict=mask)
    assert (ours - theirs).abs().max() <= 1e-4


def test_model_config_variants():
    with pytest.raises(ValueError, match="use_lang_emb"):
        ModelConfig(arch="xlmr", use_lang_emb=True, n_langs=3)
    cfg = ModelConfig(arch="xlmr", vocab_size=50, n_langs=3, emb_dim=16, n_layers=1, n_heads=2, pad_index=1)
    assert not cfg.use_lang_emb and cfg.position_rows() == cfg.max_positions + 2
    model = TransformerModel(cfg)
    assert model.lang_embeddings is None and model.token_type_embeddings.weight.shape == (1, 16)
    bert = TransformerModel(cfg.model_copy(update={"arch": "bert", "pad_index": 0}))
    assert bert.token_type_embeddings.weight.shape == (2, 16) and bert.norm_emb.eps == 1e-12
    assert model.norm_emb.eps == 1e-5
