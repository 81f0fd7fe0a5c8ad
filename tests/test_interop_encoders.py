"""XLM-R and BERT checkpoints in and out: stand-ins of the released layouts built here
(``transformers``' ``save_pretrained``, fairseq's ``model.pt`` + ``dict.txt`` +
``sentencepiece.bpe.model``), imported with equal logits on real sentences of the shipped
languages, padded batches included; exported directories that ``transformers`` loads with no
missing or unexpected weights and equal logits; unsafe pickles and bad inputs refused."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
from pathlib import Path

import pytest
import standins
import torch

from xlm.cli import main as cli_main
from xlm.errors import CheckpointError
from xlm.interop.fairseq import import_fairseq
from xlm.interop.huggingface import export_hf, import_hf
from xlm.model.pretrained import load_pretrained
from xlm.model.transformer import TransformerModel

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytestmark = pytest.mark.slow  # each builds or converts models with transformers (seconds)

TOL = 1e-4


def real_sentences() -> list[str]:
    from test_interop import SENTENCES

    return [s for lines in SENTENCES.values() for s in lines]


SENTENCES = real_sentences()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The stand-ins, built once: XLM-R (transformers and fairseq layouts), a bare
    XLMRobertaModel, and BERT."""
    d = tmp_path_factory.mktemp("standins")
    spm_model = standins.train_sentencepiece(d / "sp.model", SENTENCES * 4, vocab_size=220)
    xlmr = standins.hf_xlmr(d / "hf_xlmr", spm_model, seed=1)
    standins.hf_xlmr(d / "hf_xlmr_bare", spm_model, seed=2, masked_lm=False)
    with torch.no_grad():  # fairseq has no token-type embedding: give the source model a zero one
        xlmr.roberta.embeddings.token_type_embeddings.weight.zero_()
    xlmr.save_pretrained(d / "hf_xlmr_zero_types")
    standins.fairseq_xlmr(d / "fairseq_xlmr", xlmr, spm_model)
    vocab_txt = standins.train_wordpiece(d / "wp", SENTENCES * 4, vocab_size=320)
    standins.hf_bert(d / "hf_bert", vocab_txt, seed=3)
    return {
        "spm": spm_model,
        "hf_xlmr": d / "hf_xlmr",
        "hf_xlmr_bare": d / "hf_xlmr_bare",
        "hf_xlmr_zero_types": d / "hf_xlmr_zero_types",
        "fairseq_xlmr": d / "fairseq_xlmr",
        "hf_bert": d / "hf_bert",
    }


def hf_batch(directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Real sentences of every shipped language, tokenized by the directory's own
    ``transformers`` tokenizer, padded: ``(ids, attention mask)``."""
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    assert enc["attention_mask"].sum(1).min() < enc["attention_mask"].shape[1]  # padding present
    return enc["input_ids"], enc["attention_mask"].bool()


def our_logits(directory: Path, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    model = load_pretrained(directory).model
    with torch.no_grad():
        return model(ids, mask.sum(1), predict=mask)


def hf_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask.long()).logits[mask]


def load_hf(directory: Path):
    model, info = transformers.AutoModelForMaskedLM.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


@pytest.mark.parametrize("name", ["hf_xlmr", "hf_bert"])
def test_import_hf_standin_then_export_equal_logits(tmp_path, built, name):
    src = built[name]
    ours = tmp_path / "ours"
    assert cli_main(["import", "hf", str(src), str(ours)]) == 0
    pre = load_pretrained(ours)
    arch = "xlmr" if name == "hf_xlmr" else "bert"
    assert pre.info.config.arch == arch and pre.model.lang_embeddings is None
    tok = transformers.AutoTokenizer.from_pretrained(src)
    assert pre.vocab.specials.pad == tok.pad_token_id and pre.vocab.specials.mask == tok.mask_token_id
    assert pre.vocab.specials.start == tok.cls_token_id and pre.vocab.specials.end == tok.sep_token_id
    assert pre.info.lang_id("fr") == 0  # no languages: any text
    ids, mask = hf_batch(src)
    theirs = hf_logits(load_hf(src), ids, mask)
    assert (our_logits(ours, ids, mask) - theirs).abs().max() <= TOL
    # and out again: transformers loads it with no missing/unexpected weights, equal logits and ids
    out = tmp_path / "exported"
    assert cli_main(["export", str(ours), "--to", "hf", str(out)]) == 0
    assert (hf_logits(load_hf(out), ids, mask) - theirs).abs().max() <= TOL
    assert torch.equal(hf_batch(out)[0], ids)


def test_export_of_our_own_networks(tmp_path, built):
    """Models of ours (our initialisation, perturbed) exported: equal logits in transformers."""
    ours = tmp_path / "imported"
    import_hf(built["hf_xlmr"], ours)
    ids, mask = hf_batch(built["hf_xlmr"])
    pre = load_pretrained(ours)
    torch.manual_seed(5)
    model = TransformerModel(pre.info.config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    from xlm.model.pretrained import write_model_files
    from xlm.training.checkpoint import save_checkpoint

    fresh = tmp_path / "fresh"
    save_checkpoint(fresh, lambda tmp: write_model_files(tmp, model, pre.info, ours))
    out = tmp_path / "out"
    report = export_hf(fresh, out)
    assert {"config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer_config.json"} <= set(report.files)
    assert (our_logits(fresh, ids, mask) - hf_logits(load_hf(out), ids, mask)).abs().max() <= TOL


def test_import_bare_xlmr_model(tmp_path, built):
    src = built["hf_xlmr_bare"]
    report = import_hf(src, tmp_path / "ours")
    assert any("no LM head" in n for n in report.notes)
    ids, mask = hf_batch(src)
    hf = transformers.AutoModel.from_pretrained(src).eval()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state[mask]
        ours = load_pretrained(tmp_path / "ours").model(ids, mask.sum(1))[mask]
    assert (ours - theirs).abs().max() <= TOL


def test_import_fairseq_layout(tmp_path, built):
    out = tmp_path / "ours"
    assert cli_main(["import", "fairseq", str(built["fairseq_xlmr"]), str(out)]) == 0
    ids, mask = hf_batch(built["hf_xlmr"])
    theirs = hf_logits(load_hf(built["hf_xlmr_zero_types"]), ids, mask)
    assert (our_logits(out, ids, mask) - theirs).abs().max() <= TOL
    import_hf(built["hf_xlmr"], tmp_path / "from_hf")
    assert (out / "vocab.json").read_text() == (tmp_path / "from_hf" / "vocab.json").read_text()


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_fairseq_pickle_with_code_refused(tmp_path, built):
    src = tmp_path / "evil"
    shutil.copytree(built["fairseq_xlmr"], src)
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(src / "model.pt", weights_only=True)
    marker = tmp_path / "ran"
    ckpt["cfg"] = {"model": _Evil(marker)}
    torch.save(ckpt, src / "model.pt")
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        import_fairseq(src, tmp_path / "out")
    assert cli_main(["import", "fairseq", str(src), str(tmp_path / "out")]) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()
    with pytest.raises(pickle.UnpicklingError):  # the payload is real: plain pickle would run it
        torch.load(src / "model.pt", weights_only=True)


def test_bad_inputs_one_line_errors_nothing_written(tmp_path, built, capsys):
    # a config.json of another model type
    other = tmp_path / "gpt2"
    shutil.copytree(built["hf_xlmr"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    assert cli_main(["import", "hf", str(other), str(tmp_path / "o1")]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and str(other / "config.json") in err and "'gpt2'" in err and "'xlm-roberta'" in err
    )
    # a SentencePiece model of another size: both numbers named
    small = tmp_path / "small_vocab"
    shutil.copytree(built["hf_xlmr"], small)
    standins.train_sentencepiece(small / "sentencepiece.bpe.model", SENTENCES * 4, vocab_size=150)
    with pytest.raises(
        CheckpointError, match=r"sentencepiece\.bpe\.model: 152 tokens, but the embeddings .* have 222 rows"
    ):
        import_hf(small, tmp_path / "o2")
    # a file that is not a SentencePiece model
    (small / "sentencepiece.bpe.model").write_text("not a model")
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        import_hf(small, tmp_path / "o3")
    # BERT: vocab.txt one token short
    bert = tmp_path / "bert"
    shutil.copytree(built["hf_bert"], bert)
    lines = (bert / "vocab.txt").read_text().splitlines()
    (bert / "vocab.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(CheckpointError, match=rf"vocab\.txt: {len(lines) - 1} tokens, but .* {len(lines)} rows"):
        import_hf(bert, tmp_path / "o4")
    # fairseq: dict.txt disagreeing with the SentencePiece model
    fs = tmp_path / "fs"
    shutil.copytree(built["fairseq_xlmr"], fs)
    words = (fs / "dict.txt").read_text().splitlines()
    (fs / "dict.txt").write_text("\n".join([words[1], words[0], *words[2:]]) + "\n")
    with pytest.raises(CheckpointError, match=r"dict\.txt: token id 4 is"):
        import_fairseq(fs, tmp_path / "o5")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


@pytest.mark.parametrize("arch", ["xlmr", "bert"])
def test_bench_pairs_carry_the_same_weights(arch, tmp_path):
    """`xlm bench --arch` times our network and transformers' with equal weights (checked
    here: equal logits on a padded batch), and runs end to end at a tiny size."""
    from xlm.benchmarking.throughput import SHAPES, build_pair, for_arch, hf_inputs, make_batches

    shape = for_arch(SHAPES["tiny"], arch)
    ours, hf = build_pair(shape)
    ours.eval(), hf.eval()
    b = make_batches(shape, 1, padded=True, device=torch.device("cpu"))[0]
    real = b["mask"].bool()
    with torch.no_grad():
        theirs = hf(**hf_inputs(hf, b)).logits[real]
        mine = ours(b["tokens"], b["lengths"], predict=real)
    assert (mine - theirs).abs().max() <= TOL
    out = tmp_path / "rows.json"
    args = ["bench", "--shapes", "tiny", "--arch", arch, "--repeats", "1", "--no-memory", "--modes", "train,infer-pad"]
    assert cli_main([*args, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["arch"] for r in rows] == [arch, arch] and all(r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 for r in rows)


def test_bert_saved_by_transformers_5_without_vocab_txt(tmp_path, built):
    """transformers 5's save_pretrained writes tokenizer.json and no vocab.txt: the
    vocabulary is read from tokenizer.json, and vocab.txt written for ours."""
    src = tmp_path / "bert"
    shutil.copytree(built["hf_bert"], src)
    (src / "vocab.txt").unlink()
    out = tmp_path / "ours"
    import_hf(src, out)
    assert (out / "vocab.txt").read_text() == (built["hf_bert"] / "vocab.txt").read_text()
    ids, mask = hf_batch(src)
    assert (our_logits(out, ids, mask) - hf_logits(load_hf(src), ids, mask)).abs().max() <= TOL


def test_imported_model_takes_any_language(tmp_path, built):
    import_hf(built["hf_xlmr"], tmp_path / "ours")
    info = load_pretrained(tmp_path / "ours").info
    assert info.lang2id == {} and info.lang_id("hi") == 0 and info.lang_id("fr") == 1 and info.lang_id("hi") == 0
    import_hf(built["hf_xlmr"], tmp_path / "named", langs=["en", "fr"])
    named = load_pretrained(tmp_path / "named").info
    with pytest.raises(CheckpointError, match="not one of the model's languages"):
        named.lang_id("hi")


def test_import_xlmr_from_pytorch_model_bin(tmp_path, built):
    """Older transformers directories hold pytorch_model.bin: read with weights_only."""
    from safetensors.torch import load_file

    src = tmp_path / "bin"
    shutil.copytree(built["hf_xlmr"], src)
    torch.save(load_file(src / "model.safetensors"), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    import_hf(src, tmp_path / "ours")
    ids, mask = hf_batch(built["hf_xlmr"])
    assert (
        our_logits(tmp_path / "ours", ids, mask) - hf_logits(load_hf(built["hf_xlmr"]), ids, mask)
    ).abs().max() <= TOL
