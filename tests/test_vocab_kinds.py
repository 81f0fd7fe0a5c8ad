"""SentencePiece (XLM-R) and WordPiece (mBERT) vocabularies: ids equal to transformers'
tokenizers on the shipped corpus, special ids threaded through data, model and commands, the
bad inputs of issue 18."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from xlm.checkpoint_io import add_file_to_checkpoint, save_checkpoint
from xlm.cli import main
from xlm.config import load_config
from xlm.data.classification import build_row
from xlm.data.dataset import MonolingualData, PreparedData
from xlm.errors import CheckpointError, DataError
from xlm.model.pretrained import load_pretrained
from xlm.tasks.pretraining import PretrainConfig, run_training
from xlm.text.sentencepiece import SentencePieceTokenizer, learn_sentencepiece, write_sentencepiece_vocabulary
from xlm.text.tokenizer import TextEncoder, load_tokenizer
from xlm.text.vocab import SENTENCEPIECE_FILE, VOCAB_FILE, VOCAB_INFO_FILE, XLM_SPECIALS, Specials, Vocabulary
from xlm.text.wordpiece import learn_wordpiece

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("XLM_TEST_CORPUS", ROOT / "data" / "corpus"))
LANGS = ["de", "en", "es", "fr", "hi", "ru"]


def _head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for _, line in zip(range(n), f)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, list[Path]]:
    d = tmp_path_factory.mktemp("raw")
    out = {}
    for lang in LANGS:
        p = d / f"train.{lang}"
        p.write_text("".join(x + "\n" for x in _head(CORPUS / f"train.{lang}.gz", 600)), encoding="utf-8")
        out[lang] = [p]
    return out


@pytest.fixture(scope="module")
def test_sentences() -> dict[str, list[str]]:
    return {lang: [s for s in _head(CORPUS / f"test.{lang}.gz", 150) if s.strip()] for lang in LANGS}


@pytest.fixture(scope="module")
def sp_dir(sources, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sp")
    learn_sentencepiece(sources, d, 1000)
    return d


def test_sentencepiece_layout_and_ids_equal_xlmr_tokenizer(sp_dir, test_sentences):
    transformers = pytest.importorskip("transformers")
    vocab = Vocabulary.from_dir(sp_dir)
    assert len(vocab) == 1000 and vocab.kind == "sentencepiece"
    assert vocab.specials == Specials("sentencepiece", start=0, end=2, pad=1, unk=3, mask=999)
    assert vocab.id_to_token[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and vocab.token(999) == "<mask>"
    assert (vocab.words_start, vocab.words_end) == (4, 999)
    ours = load_tokenizer(sp_dir)
    hf = transformers.XLMRobertaTokenizer.from_pretrained(str(sp_dir))
    assert len(hf) == len(vocab) and hf.mask_token_id == 999 and hf.pad_token_id == 1
    n = 0
    for lang, lines in test_sentences.items():
        for s in lines:
            assert hf(s)["input_ids"] == [0, *ours.encode(s), 2], (lang, s)
            n += 1
    assert n > 800
    enc = TextEncoder(sp_dir, "hi")  # raw text, no Moses rules: any language
    s = test_sentences["hi"][0]
    assert enc.encode(s) == ours.encode(s)
    known = next(x for x in test_sentences["en"] if 3 not in ours.encode(x) and "  " not in x)
    assert TextEncoder(sp_dir, "en").decode(ours.encode(known)) == known.strip()
    assert "⁇" in ours.decode([*ours.encode("abc"), 3])  # <unk> stays visible


def test_sentencepiece_bpe_model_type_ids(sources, test_sentences, tmp_path):
    """A BPE-type model: ids equal the sentencepiece library's pieces at XLM-R's offsets (what
    XLMRobertaTokenizer < 5 computes; transformers 5 converts every model to a Unigram one)."""
    import sentencepiece as spm

    learn_sentencepiece(sources, tmp_path, 800, model_type="bpe")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / SENTENCEPIECE_FILE))
    ours = load_tokenizer(tmp_path)
    for lines in test_sentences.values():
        for s in lines[:40]:
            assert ours.encode(s) == [i + 1 if i else 3 for i in sp.encode(s)]
    assert json.loads((tmp_path / "sentencepiece.json").read_text())["model_type"] == "bpe"
    again = tmp_path / "again"  # learning is reproducible: the same model byte for byte
    learn_sentencepiece(sources, again, 800, model_type="bpe")
    assert (again / SENTENCEPIECE_FILE).read_bytes() == (tmp_path / SENTENCEPIECE_FILE).read_bytes()
    # a released model file becomes a vocabulary directory the same way (what import uses)
    n = write_sentencepiece_vocabulary(tmp_path / "copy", (tmp_path / SENTENCEPIECE_FILE).read_bytes())
    assert n == 800 and Vocabulary.from_dir(tmp_path / "copy").token_to_id == ours.vocab.token_to_id


@pytest.mark.parametrize("lowercase", [False, True])
def test_wordpiece_ids_equal_bert_tokenizer(sources, test_sentences, tmp_path, lowercase):
    transformers = pytest.importorskip("transformers")
    learn_wordpiece(sources, tmp_path, 1500, lowercase=lowercase)
    vocab = Vocabulary.from_dir(tmp_path)
    assert vocab.specials == Specials("wordpiece", start=2, end=3, pad=0, unk=1, mask=4)
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines() == vocab.id_to_token
    ours = load_tokenizer(tmp_path)
    hf = transformers.BertTokenizer.from_pretrained(str(tmp_path), do_lower_case=lowercase)
    assert len(hf) == len(vocab)
    for lang, lines in test_sentences.items():
        for s in lines:
            assert hf(s)["input_ids"] == [2, *ours.encode(s), 3], (lang, s)
    # learning is reproducible: the same files byte for byte
    again = tmp_path / "again"
    learn_wordpiece(sources, again, 1500, lowercase=lowercase)
    assert (again / "vocab.txt").read_bytes() == (tmp_path / "vocab.txt").read_bytes()


def test_bpe_vocabulary_keeps_the_xlm_layout(tiny_data):
    vocab = Vocabulary.from_dir(tiny_data)
    assert vocab.kind == "bpe" and vocab.specials == XLM_SPECIALS
    assert (XLM_SPECIALS.start, XLM_SPECIALS.end, XLM_SPECIALS.pad, XLM_SPECIALS.unk, XLM_SPECIALS.mask) == (
        1,
        1,
        2,
        3,
        5,
    )
    assert vocab.words_start == 14 and vocab.words_end == len(vocab)
    assert build_row([7, 8], [9], 16).tolist() == [1, 7, 8, 1, 9, 1]


def test_pair_rows_follow_the_kind():
    sp = Specials("sentencepiece", 0, 2, 1, 3, 99)
    wp = Specials("wordpiece", 2, 3, 0, 1, 4)
    assert build_row([7, 8], [9], 16, sp).tolist() == [0, 7, 8, 2, 2, 9, 2]  # <s> a </s></s> b </s>
    assert build_row([7, 8], [9], 16, wp).tolist() == [2, 7, 8, 3, 9, 3]  # [CLS] a [SEP] b [SEP]
    assert build_row(list(range(10, 30)), None, 6, wp).tolist() == [2, 10, 11, 12, 13, 3]


# --------------------------------------------------------------------------- end to end


def _raw_corpus(d: Path, n: int = 300) -> Path:
    d.mkdir(parents=True)
    for name, k in (("train.en", n), ("train.fr", n), ("valid.en", 40), ("valid.fr", 40),
                    ("train.en-fr.en", n), ("train.en-fr.fr", n), ("valid.en-fr.en", 40), ("valid.en-fr.fr", 40)):  # fmt: skip
        (d / name).write_text("".join(x + "\n" for x in _head(CORPUS / f"{name}.gz", k)), encoding="utf-8")
    return d


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sentencepiece", "wordpiece"])
def test_prepare_pretrain_finetune_end_to_end(kind, tmp_path, capsys, tiny_config_overrides):
    raw = _raw_corpus(tmp_path / "raw")
    data = tmp_path / "data"
    assert main(["prepare", str(raw), str(data), "--vocab-size", "500", "--tokenizer", kind, "--workers", "1"]) == 0
    assert f"({kind}, hash" in capsys.readouterr().out
    prepared = PreparedData.open(data)
    sp = prepared.vocab.specials
    assert prepared.vocab.kind == kind and prepared.info["vocab_kind"] == kind
    mono = prepared.mono("train", "en")
    assert mono.meta["vocab_kind"] == kind and Specials.from_json(mono.meta["specials"]) == sp
    assert mono.tokens[0] == sp.end and all(mono.tokens[e] == sp.end for _, e in np.asarray(mono.bounds[:20]))
    # the binarized text is what the tokenizer gives the raw line (no Moses pre-tokenization)
    first = _head(CORPUS / "train.en.gz", 1)[0]
    assert mono.sentence(0).tolist() == load_tokenizer(data).encode(first)

    out = tmp_path / "run"
    cfg = load_config(PretrainConfig, None, tiny_config_overrides(data, out, steps=4) + ["train.threads=1"])
    metrics = run_training(cfg)
    assert "valid/mlm/en/ppl" in metrics and np.isfinite(metrics["valid/mlm/en/ppl"])
    ckpt = out / "final"
    pretrained = load_pretrained(ckpt)
    assert pretrained.model.cfg.pad_index == sp.pad
    assert json.loads((ckpt / "model.json").read_text())["model"]["pad_index"] == sp.pad
    assert pretrained.vocab.specials == sp and (ckpt / VOCAB_INFO_FILE).is_file()

    # xlm encode on raw text
    lines = _head(CORPUS / "valid.fr.gz", 2)
    import sys

    capsys.readouterr()  # drop the training log
    stdin = sys.stdin
    try:
        sys.stdin = io.TextIOWrapper(io.BytesIO("".join(x + "\n" for x in lines).encode()), encoding="utf-8")
        assert main(["encode", "--vocab", str(ckpt), "--lang", "fr", "--ids"]) == 0
    finally:
        sys.stdin = stdin
    ids = [list(map(int, x.split())) for x in capsys.readouterr().out.splitlines()]
    assert ids == [load_tokenizer(ckpt).encode(x) for x in lines]

    # fine-tune a classifier on raw text and test zero-shot
    cls = tmp_path / "cls"
    train, test = tmp_path / "train.en.tsv", tmp_path / "test.fr.tsv"
    train.write_text(
        "".join(x + "\n" for x in _head(ROOT / "data" / "classify" / "train.en.tsv.gz", 80)), encoding="utf-8"
    )
    test.write_text(
        "".join(x + "\n" for x in _head(ROOT / "data" / "classify" / "test.fr.tsv.gz", 30)), encoding="utf-8"
    )
    code = main(
        ["finetune", "classify", str(ckpt), "--train", f"en={train}", "--test", f"fr={test}", "--out", str(cls),
         "train.max_steps=3", "data.max_tokens=256", "data.max_len=32", "train.progress=false", "train.threads=1"]
    )  # fmt: skip
    assert code == 0
    acc = json.loads((cls / "results.json").read_text())["accuracy"]
    assert 0.0 <= acc["fr"] <= 100.0


# --------------------------------------------------------------------------- bad input


def test_not_a_sentencepiece_model_is_one_line_error(sp_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(sp_dir, bad)
    (bad / SENTENCEPIECE_FILE).write_bytes(b"this is not a protobuf at all\n" * 3)
    with pytest.raises(DataError, match=rf"{SENTENCEPIECE_FILE}: not a SentencePiece model \(90 bytes"):
        SentencePieceTokenizer.from_dir(bad)
    # prepare --vocab with it: the error comes before anything is written
    out = tmp_path / "out"
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.en").write_text("hello world\n")
    assert main(["prepare", str(raw), str(out), "--vocab", str(bad)]) == 1
    assert not out.exists()


def test_vocab_info_disagreeing_with_vocab_json(sp_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(sp_dir, bad)
    info = json.loads((bad / VOCAB_INFO_FILE).read_text())
    info["specials"]["mask"] = "<MASK>"
    (bad / VOCAB_INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"vocab_info.json: special tokens mask='<MASK>' are not in the 1000-token"):
        Vocabulary.from_dir(bad)

    shutil.rmtree(bad)
    shutil.copytree(sp_dir, bad)
    mapping = json.loads((bad / VOCAB_FILE).read_text())
    del mapping["<mask>"]
    (bad / VOCAB_FILE).write_text(json.dumps(mapping))
    with pytest.raises(DataError, match="<mask>"):
        Vocabulary.from_dir(bad)
    mapping["<mask>"] = 999
    mapping["extra"] = 1000
    (bad / VOCAB_FILE).write_text(json.dumps(mapping))
    with pytest.raises(DataError, match=r"vocab.json has 1001 tokens but sentencepiece.bpe.model has 998 pieces"):
        SentencePieceTokenizer.from_dir(bad)

    (bad / VOCAB_INFO_FILE).write_text(json.dumps({"kind": "morfessor", "specials": {}}))
    with pytest.raises(DataError, match="kind must be one of bpe, sentencepiece, wordpiece"):
        Vocabulary.from_dir(bad)


def test_binarized_data_of_another_kind_is_refused(sp_dir, tmp_path):
    from xlm.data.binarize import binarize

    text = tmp_path / "t.txt"
    text.write_text("Hello world.\nBonjour le monde.\n", encoding="utf-8")
    tok = load_tokenizer(sp_dir)
    binarize(text, tmp_path / "train.en", tok, "en")
    data = MonolingualData.open(tmp_path / "train.en", tok.vocab.hash, tok.vocab.specials)
    assert data.specials == tok.vocab.specials and data.tokens[0] == 2  # </s>
    with pytest.raises(DataError, match="special ids"):
        MonolingualData.open(tmp_path / "train.en", None, XLM_SPECIALS)


def test_vocabulary_size_disagreeing_with_the_embeddings(tiny_checkpoint_sp, tmp_path):
    bad = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_sp, bad)
    mapping = json.loads((bad / VOCAB_FILE).read_text())
    for t, i in list(mapping.items()):
        if i >= len(mapping) - 10 and t != "<mask>":
            del mapping[t]
    mapping = {t: i for i, t in enumerate(sorted(mapping, key=mapping.get))}
    add_file_to_checkpoint(bad, VOCAB_FILE, json.dumps(mapping).encode())
    with pytest.raises(CheckpointError, match=r"vocab.json: 991 tokens but the model's embeddings have 1000 rows"):
        load_pretrained(bad)


@pytest.fixture(scope="module")
def tiny_checkpoint_sp(sp_dir, tmp_path_factory) -> Path:
    """A tiny model saved with a SentencePiece vocabulary (random weights, no training)."""
    import torch

    from xlm.model.pretrained import ModelInfo, write_model_files
    from xlm.model.transformer import ModelConfig, TransformerModel

    d = tmp_path_factory.mktemp("ckpt_sp") / "model"
    vocab = Vocabulary.from_dir(sp_dir)
    cfg = ModelConfig(vocab_size=len(vocab), n_langs=2, emb_dim=16, n_layers=1, n_heads=2, pad_index=vocab.specials.pad)
    torch.manual_seed(0)
    model, info = TransformerModel(cfg), ModelInfo(cfg, {"en": 0, "fr": 1}, False, {})
    save_checkpoint(d, lambda tmp: write_model_files(tmp, model, info, sp_dir))
    return d


@pytest.mark.parametrize("beam", [1, 3])
def test_generation_uses_the_vocabulary_start_end_and_pad(beam):
    import torch

    from xlm.model.generation import DecodeConfig, generate
    from xlm.model.seq2seq import EncoderDecoder
    from xlm.model.transformer import ModelConfig

    sp = Specials("sentencepiece", start=0, end=2, pad=1, unk=3, mask=39)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=40, n_langs=2, emb_dim=16, n_layers=1, n_heads=2, max_positions=64, pad_index=1)
    model = EncoderDecoder(cfg, decoder_layers=1).eval()
    with torch.no_grad():
        model.decoder.pred_bias[2] = 3.0  # ends soon, at different lengths
    lengths = torch.tensor([6, 4, 5])
    src = torch.full((3, 6), sp.pad)
    for i, n in enumerate(lengths.tolist()):
        src[i, :n] = torch.randint(4, 39, (n,))
        src[i, 0], src[i, n - 1] = sp.start, sp.end
    tokens, out_len = generate(model, src, lengths, 0, 1, DecodeConfig(beam_size=beam), sp)
    for row, n in zip(tokens.tolist(), out_len.tolist()):
        assert row[0] == sp.start and row[n - 1] == sp.end and sp.end not in row[1 : n - 1]
        assert all(t == sp.pad for t in row[n:])


def test_masking_draws_random_words_from_the_vocabulary_range(sp_dir):
    import torch

    from xlm.objectives.masking import MaskingConfig, corrupt

    vocab = Vocabulary.from_dir(sp_dir)
    cfg = MaskingConfig.for_vocab(vocab, 0.15, 0.0, 1.0, 0.0)  # every chosen token becomes a random one
    assert (cfg.mask_index, cfg.n_special, cfg.word_end) == (999, 4, 999)
    tokens = torch.full((64, 64), 500)
    out = corrupt(tokens, torch.ones_like(tokens, dtype=torch.bool), cfg, torch.Generator().manual_seed(0))
    assert int(out.min()) >= 4 and int(out.max()) < 999


def test_wordpiece_vocab_txt_disagreeing_with_vocab_json(sources, tmp_path):
    from xlm.text.wordpiece import WordPieceTokenizer

    learn_wordpiece({"en": sources["en"]}, tmp_path, 300)
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "vocab.txt").write_text("".join(x + "\n" for x in lines[:-2]), encoding="utf-8")
    with pytest.raises(DataError, match=r"vocab.json has 300 tokens but vocab.txt has 298"):
        WordPieceTokenizer.from_dir(tmp_path)
    lines[10], lines[11] = lines[11], lines[10]
    (tmp_path / "vocab.txt").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    with pytest.raises(DataError, match=r"vocab.txt:11: "):
        WordPieceTokenizer.from_dir(tmp_path)


@pytest.mark.slow
def test_sentencepiece_machine_translation_end_to_end(tmp_path, capsys, memorised_pairs):
    """Raw text -> prepare (SentencePiece) -> train-mt -> translate: <s> ... </s> rows in and
    out, decoded back to the raw text of four memorised pairs."""
    run = memorised_pairs.train(tmp_path, "--vocab-size", "120", "--tokenizer", "sentencepiece")
    capsys.readouterr()
    output = memorised_pairs.translate(run / "final", tmp_path)
    assert output.read_text().split("\n") == memorised_pairs.expected
