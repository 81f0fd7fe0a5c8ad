"""Interoperability: export to / import from Hugging Face transformers, and import of the
original XLM checkpoints (fastBPE vocabularies). Tiny models; every equality is checked on
real sentences in several languages, with language ids, with and without padding."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch

from xlm.checkpoint_io import save_checkpoint
from xlm.cli import main as cli_main
from xlm.errors import CheckpointError
from xlm.interop.huggingface import export_hf, import_hf
from xlm.interop.layout import to_xlm_layout
from xlm.interop.original import (
    convert_fastbpe,
    fastbpe_to_eow,
    import_original,
    read_fastbpe_vocab,
)
from xlm.model.pretrained import ModelInfo, load_pretrained, write_model_files
from xlm.model.transformer import ModelConfig, TransformerModel
from xlm.text import bpe, normalize
from xlm.text.segment import SEGMENTED_LANGS
from xlm.text.vocab import END_OF_WORD, EOS_INDEX, N_SPECIAL, PAD_INDEX, SPECIAL_TOKENS

transformers = pytest.importorskip("transformers")

TOL = 1e-4
CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
FALLBACK_SENTENCES = {
    "en": [
        "The committee will meet again next Tuesday to discuss the budget.",
        "She opened the window because the room was too warm.",
        "How many languages do you speak? I don't know.",
        "Prices rose by 3.5% in March, according to official figures.",
    ],
    "fr": [
        "Le comité se réunira de nouveau mardi prochain pour discuter du budget.",
        "Elle a ouvert la fenêtre parce que la pièce était trop chaude.",
        "Combien de langues parlez-vous ? L'objet n'a pas pu être créé d'après le modèle.",
        "Les prix ont augmenté de 3,5 % en mars, selon les chiffres officiels.",
    ],
    "de": [
        "Der Ausschuss wird am nächsten Dienstag erneut zusammentreten, um den Haushalt zu besprechen.",
        "Sie öffnete das Fenster, weil es im Zimmer zu warm war.",
        "Wie viele Sprachen sprechen Sie?",
        "Die Preise stiegen im März laut offiziellen Zahlen um 3,5 %.",
    ],
    "es": [
        "El comité volverá a reunirse el próximo martes para discutir el presupuesto.",
        "Ella abrió la ventana porque la habitación estaba demasiado caliente.",
        "¿Cuántos idiomas hablas?",
        "Los precios subieron un 3,5 % en marzo, según las cifras oficiales.",
    ],
}


def load_sentences(n_langs: int = 6, per_lang: int = 4) -> dict[str, list[str]]:
    """Real sentences: the shipped test corpus when present, else the ones above."""
    found: dict[str, list[str]] = {}
    for path in sorted(CORPUS.glob("test.*.gz")) if CORPUS.is_dir() else []:
        lang = path.name.split(".")[1]
        if len(lang) != 2 or lang in SEGMENTED_LANGS or len(found) >= n_langs:
            continue
        lines = []
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if 4 <= len(line.split()) <= 25:
                    lines.append(line)
                if len(lines) == per_lang:
                    break
        if len(lines) == per_lang:
            found[lang] = lines
    return found if len(found) >= 3 else FALLBACK_SENTENCES


SENTENCES = load_sentences()
LANGS = sorted(SENTENCES)
LANG2ID = {lang: i for i, lang in enumerate(LANGS)}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory) -> Path:
    """A small shared BPE learned on the (normalized, cased) sentences."""
    d = tmp_path_factory.mktemp("vocab")
    sources = {}
    for lang, lines in SENTENCES.items():
        norm = normalize.Normalizer(lang)
        p = d / f"{lang}.txt"
        p.write_text("".join(norm(s) + "\n" for s in lines), encoding="utf-8")
        sources[lang] = [p]
    bpe.learn_bpe(sources, d, vocab_size=400, lowercase_and_remove_accent=False)
    return d


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Make every tensor distinct (LayerNorms and biases too), so that no mix-up goes unseen."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def tiny_config(vocab_size: int, **kw) -> ModelConfig:
    base = dict(vocab_size=vocab_size, n_langs=len(LANGS), emb_dim=32, n_layers=2, n_heads=4, max_positions=160)
    return ModelConfig(**{**base, **kw})


def make_checkpoint(directory: Path, vocab_dir: Path, seed: int = 0, lower: bool = False, **cfg_kw) -> Path:
    vocab_size = len(json.loads((vocab_dir / "vocab.json").read_text(encoding="utf-8")))
    torch.manual_seed(seed)
    model = TransformerModel(tiny_config(vocab_size, **cfg_kw))
    perturb(model, seed)
    info = ModelInfo(model.cfg, LANG2ID, lower)
    return save_checkpoint(directory, lambda tmp: write_model_files(tmp, model, info, vocab_dir))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, vocab_dir) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ours") / "ckpt", vocab_dir)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ckpt) -> Path:
    out = tmp_path_factory.mktemp("hf") / "export"
    assert cli_main(["export", str(ckpt), "--to", "hf", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def hf_exported(exported):
    """The exported directory loaded by transformers (once; deep-copy it before changing it)."""
    return load_hf(exported)


# --------------------------------------------------------------------------- helpers


def encode_batch(directory: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All sentences as ``</s> w1 .. wn </s>`` with our tokenizer: (tokens, lengths, langs), padded."""
    rows, langs = [], []
    for lang in LANGS:
        enc = bpe.TextEncoder(directory, lang, lowercase_and_remove_accent=False)
        for s in SENTENCES[lang]:
            rows.append([EOS_INDEX, *enc.encode(s)[:120], EOS_INDEX])
            langs.append(LANG2ID[lang])
    lengths = torch.tensor([len(r) for r in rows])
    tokens = torch.full((len(rows), int(lengths.max())), PAD_INDEX, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    assert bool((lengths < tokens.shape[1]).any()), "the batch should contain padding"
    return tokens, lengths, torch.tensor(langs)


def our_logits(
    model: TransformerModel, tokens: torch.Tensor, lengths: torch.Tensor, langs: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        return model.predict(model(tokens, lengths=lengths, langs=langs))


def hf_logits(model, tokens: torch.Tensor, lengths: torch.Tensor, langs: torch.Tensor) -> torch.Tensor:
    mask = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        return model(input_ids=tokens, attention_mask=mask, langs=langs[:, None].expand_as(tokens)).logits


def max_diff(a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor) -> float:
    """Largest difference at the real (non-padding) positions."""
    mask = torch.arange(a.shape[1])[None, :] < lengths[:, None]
    return float((a - b).abs()[mask].max())


def load_hf(directory: Path):
    model, info = transformers.XLMWithLMHeadModel.from_pretrained(str(directory), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def compare(ours: TransformerModel, hf_model, tokens, lengths, langs) -> float:
    """Max |logit difference|: the padded batch, and two sentences alone (no padding)."""
    worst = max_diff(our_logits(ours, tokens, lengths, langs), hf_logits(hf_model, tokens, lengths, langs), lengths)
    for i in (0, len(lengths) - 1):
        t, n, lg = tokens[i : i + 1, : lengths[i]], lengths[i : i + 1], langs[i : i + 1]
        worst = max(worst, max_diff(our_logits(ours, t, n, lg), hf_logits(hf_model, t, n, lg), n))
    return worst


# --------------------------------------------------------------------------- export


def test_export_loads_in_transformers_with_equal_logits(ckpt, exported, hf_exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["lang2id"] == LANG2ID and config["id2lang"] == {str(i): lg for lg, i in LANG2ID.items()}
    assert config["use_lang_emb"] is True and config["n_langs"] == len(LANGS)
    for name in ("model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json", "README.md"):
        assert (exported / name).is_file(), name
    assert (exported / "merges.txt").read_text() == (ckpt / "merges.txt").read_text() != ""
    ours = load_pretrained(ckpt).model
    tokens, lengths, langs = encode_batch(ckpt)
    diff = compare(ours, hf_exported, tokens, lengths, langs)
    print(f"export: max |logit difference| = {diff:.3g}")
    assert diff <= TOL


def hf_encode(tok, text: str, lang: str) -> list[int]:
    """XLMTokenizer with the Moses rules of ``lang``: ``tok(text, lang=...)`` drops ``lang``
    on its way to ``_tokenize`` (transformers 4.x/5.x), so call the steps ourselves."""
    return tok.build_inputs_with_special_tokens(tok.convert_tokens_to_ids(tok._tokenize(text, lang=lang)))


def test_export_tokenizer_matches_ours(ckpt, exported):
    tok = transformers.XLMTokenizer.from_pretrained(str(exported))
    assert tok.do_lowercase_and_remove_accent is False
    assert tok.lang2id == LANG2ID
    for lang in LANGS:
        ours = bpe.TextEncoder(ckpt, lang, lowercase_and_remove_accent=False)
        for s in SENTENCES[lang]:
            expected = [EOS_INDEX, *ours.encode(s), EOS_INDEX]  # </s> w1 .. wn </s>
            assert hf_encode(tok, s, lang) == expected, (lang, s)
            if lang == "en":  # the public call uses the English rules whatever `lang` says
                assert tok(s)["input_ids"] == expected, s


def test_export_refuses_existing_directory(ckpt, exported):
    with pytest.raises(CheckpointError, match="not empty"):
        export_hf(ckpt, exported)


def test_export_and_import_without_language_embeddings(tmp_path, vocab_dir):
    ckpt = make_checkpoint(tmp_path / "ckpt", vocab_dir, seed=3, use_lang_emb=False)
    out = export_hf(ckpt, tmp_path / "hf").directory
    config = json.loads((out / "config.json").read_text())
    assert config["use_lang_emb"] is False and config["n_langs"] == len(LANGS)
    hf_model = load_hf(out)
    assert not hasattr(hf_model.transformer, "lang_embeddings")
    tokens, lengths, langs = encode_batch(ckpt)
    assert compare(load_pretrained(ckpt).model, hf_model, tokens, lengths, langs) <= TOL
    back = load_pretrained(import_hf(out, tmp_path / "back").directory)
    assert back.model.lang_embeddings is None and back.info.config.use_lang_emb is False
    assert compare(back.model, hf_model, tokens, lengths, langs) <= TOL


# --------------------------------------------------------------------------- import hf


def test_round_trip_hf_ours_hf(tmp_path, ckpt, exported, hf_exported):
    assert cli_main(["import", "hf", str(exported), str(tmp_path / "ours")]) == 0
    imported = load_pretrained(tmp_path / "ours")
    original = load_pretrained(ckpt)
    for k, v in original.model.state_dict().items():
        assert torch.equal(v, imported.model.state_dict()[k]), k
    assert imported.info.lang2id == LANG2ID and imported.info.lowercase_and_remove_accent is False
    again = export_hf(tmp_path / "ours", tmp_path / "hf2").directory
    tokens, lengths, langs = encode_batch(ckpt)
    first, second = hf_exported, load_hf(again)
    diff = max_diff(hf_logits(first, tokens, lengths, langs), hf_logits(second, tokens, lengths, langs), lengths)
    diff = max(diff, compare(imported.model, second, tokens, lengths, langs))
    print(f"round trip HF -> ours -> HF: max |logit difference| = {diff:.3g}")
    assert diff <= TOL


def test_import_model_created_by_transformers(tmp_path, vocab_dir):
    vocab_size = len(json.loads((vocab_dir / "vocab.json").read_text()))
    torch.manual_seed(1)
    config = transformers.XLMConfig(
        vocab_size=vocab_size, emb_dim=32, n_layers=2, n_heads=4, n_langs=len(LANGS),
        max_position_embeddings=160, lang2id=LANG2ID, id2lang={i: lg for lg, i in LANG2ID.items()},
    )  # fmt: skip
    hf_model = transformers.XLMWithLMHeadModel(config)
    perturb(hf_model, 1)
    hf_dir = tmp_path / "hf"
    hf_model.save_pretrained(str(hf_dir))
    tok = transformers.XLMTokenizer(
        str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"),
        lang2id=LANG2ID, id2lang={i: lg for lg, i in LANG2ID.items()}, do_lowercase_and_remove_accent=False,
    )  # fmt: skip
    tok.save_pretrained(str(hf_dir))
    report = import_hf(hf_dir, tmp_path / "ours")
    ours = load_pretrained(report.directory)
    assert ours.info.lang2id == LANG2ID and ours.info.lowercase_and_remove_accent is False
    tokens, lengths, langs = encode_batch(ours.directory)
    diff = compare(ours.model, hf_model.eval(), tokens, lengths, langs)
    print(f"import of a transformers model: max |logit difference| = {diff:.3g}")
    assert diff <= TOL


def test_import_hf_vocabulary_size_mismatch(tmp_path, exported):
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    vocab = json.loads((bad / "vocab.json").read_text())
    n = len(vocab)
    vocab = {t: i for t, i in vocab.items() if i < n - 1}
    (bad / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(CheckpointError, match=rf"vocab_size={n}\b.*\b{n - 1} tokens"):
        import_hf(bad, tmp_path / "out")
    (bad / "merges.txt").unlink()
    shutil.copyfile(exported / "vocab.json", bad / "vocab.json")
    with pytest.raises(CheckpointError, match="merges.txt: missing"):
        import_hf(bad, tmp_path / "out")


# --------------------------------------------------------------------------- original checkpoints


def write_fastbpe(vocab_dir: Path, directory: Path) -> tuple[Path, Path, list[str]]:
    """Our </w> vocabulary/merges written as fastBPE vocab/codes (counts descending)."""
    mapping = json.loads((vocab_dir / "vocab.json").read_text(encoding="utf-8"))
    tokens = sorted(mapping, key=mapping.__getitem__)
    words = [t[: -len(END_OF_WORD)] if t.endswith(END_OF_WORD) else t + "@@" for t in tokens[N_SPECIAL:]]
    vocab = directory / "vocab"
    vocab.write_text("".join(f"{w} {1000 - i}\n" for i, w in enumerate(words)), encoding="utf-8")
    codes = directory / "codes"
    merges = (vocab_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    codes.write_text("".join(f"{m} {5000 - i}\n" for i, m in enumerate(merges)), encoding="utf-8")
    return vocab, codes, list(SPECIAL_TOKENS) + words


def original_checkpoint(words: list[str], params: object, **networks: TransformerModel) -> dict:
    """A dict in the original code's layout: plain tensors, ints, strs and dicts only."""
    data = {name: {f"module.{k}": v.clone() for k, v in to_xlm_layout(m.state_dict(), include_tied=True).items()}
            for name, m in networks.items()}  # fmt: skip
    data["params"] = params
    data["dico_id2word"] = dict(enumerate(words))
    data["dico_word2id"] = {w: i for i, w in enumerate(words)}
    data["dico_counts"] = {w: 1000 - i for i, w in enumerate(words)}
    return data


def original_params(cfg: ModelConfig) -> dict:
    return {
        "lang2id": LANG2ID, "id2lang": {i: lg for lg, i in LANG2ID.items()}, "n_langs": cfg.n_langs,
        "n_words": cfg.vocab_size, "emb_dim": cfg.emb_dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
        "dropout": 0.1, "attention_dropout": 0.1, "sinusoidal_embeddings": False, "use_lang_emb": True,
        "gelu_activation": True, "asm": False, "pad_index": PAD_INDEX, "eos_index": EOS_INDEX,
    }  # fmt: skip


def test_fastbpe_vocabulary_conversion(tmp_path, vocab_dir):
    vocab, codes, words = write_fastbpe(vocab_dir, tmp_path)
    assert fastbpe_to_eow("hel@@") == "hel" and fastbpe_to_eow("lo") == "lo" + END_OF_WORD
    assert read_fastbpe_vocab(vocab) == words[N_SPECIAL:]
    converted = convert_fastbpe(vocab, codes, dict(enumerate(words)))
    mapping = json.loads((vocab_dir / "vocab.json").read_text(encoding="utf-8"))
    assert {t: i for i, t in enumerate(converted.tokens)} == mapping
    assert converted.merges_outside_vocab == 0
    shuffled = words[:N_SPECIAL] + words[N_SPECIAL + 1 :] + words[N_SPECIAL : N_SPECIAL + 1]
    with pytest.raises(CheckpointError, match=f"token id {N_SPECIAL} is"):
        convert_fastbpe(vocab, codes, dict(enumerate(shuffled)))


def test_import_original_language_model(tmp_path, ckpt, hf_exported, vocab_dir):
    source = load_pretrained(ckpt)
    vocab, codes, words = write_fastbpe(vocab_dir, tmp_path)
    pth = tmp_path / "mlm.pth"
    torch.save(original_checkpoint(words, original_params(source.info.config), model=source.model), pth)
    out = tmp_path / "imported"
    args = ["import", "original", str(pth), "--vocab", str(vocab), "--codes", str(codes), str(out)]
    assert cli_main([*args, "--no-lowercase-and-remove-accent"]) == 0
    imported = load_pretrained(out)
    assert imported.info.lang2id == LANG2ID and imported.info.lowercase_and_remove_accent is False
    assert json.loads((out / "vocab.json").read_text()) == json.loads((vocab_dir / "vocab.json").read_text())
    # reference: the same original weights in transformers' XLM (whose names are the original's)
    raw = torch.load(pth, weights_only=True)["model"]
    ref = copy.deepcopy(hf_exported)
    ref.load_state_dict({("" if k.startswith("module.pred_layer") else "transformer.") + k[len("module."):]: v
                         for k, v in raw.items()})  # fmt: skip
    tokens, lengths, langs = encode_batch(out)
    diff = compare(imported.model, ref, tokens, lengths, langs)
    print(f"import original: max |logit difference| = {diff:.3g}")
    assert diff <= TOL


def test_import_original_translation_model(tmp_path, vocab_dir):
    vocab, codes, words = write_fastbpe(vocab_dir, tmp_path)
    cfg = tiny_config(len(words))
    torch.manual_seed(5)
    encoder, decoder = TransformerModel(cfg), TransformerModel(cfg.model_copy(update={"n_layers": 1}), is_decoder=True)
    perturb(encoder, 5)
    perturb(decoder, 6)
    pth = tmp_path / "mt.pth"
    torch.save(original_checkpoint(words, original_params(cfg), encoder=encoder, decoder=decoder), pth)
    report = import_original(pth, vocab, codes, tmp_path / "mt", lowercase_and_remove_accent=False)
    assert report.parts == ["encoder", "decoder"]
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "mt" / "model.safetensors"))
    for side, module in (("encoder", encoder), ("decoder", decoder)):
        for k, v in module.state_dict().items():
            assert torch.equal(state[f"{side}.{k}"], v), (side, k)
    info = json.loads((tmp_path / "mt" / "model.json").read_text())
    assert info["architecture"] == "encoder-decoder" and info["decoder_layers"] == 1
    try:
        from xlm.model.seq2seq import load_translator
    except ImportError:
        load_translator = None
    if load_translator is not None:  # the translation commands read it
        assert load_translator(tmp_path / "mt").model.decoder_layers == 1
    # cross-attention against the original formula with separate q/k/v projections
    raw = torch.load(pth, weights_only=True)["decoder"]
    x, mem = torch.randn(2, 5, cfg.emb_dim), torch.randn(2, 7, cfg.emb_dim)

    def lin(t, n):
        return t @ raw[f"module.encoder_attn.0.{n}.weight"].T + raw[f"module.encoder_attn.0.{n}.bias"]

    def heads(t):
        return t.view(2, -1, cfg.n_heads, cfg.emb_dim // cfg.n_heads).transpose(1, 2)

    q, k, v = heads(lin(x, "q_lin")), heads(lin(mem, "k_lin")), heads(lin(mem, "v_lin"))
    w = torch.softmax(q @ k.transpose(2, 3) / (cfg.emb_dim // cfg.n_heads) ** 0.5, dim=-1)
    expected = lin((w @ v).transpose(1, 2).reshape(2, 5, cfg.emb_dim), "out_lin")
    with torch.no_grad():
        got = decoder.eval().layers[0].cross_attn(x, mem, None)
    assert float((got - expected).abs().max()) <= 1e-5
    # the encoder alone, as a language model
    import_original(pth, vocab, codes, tmp_path / "enc", encoder_only=True)
    assert load_pretrained(tmp_path / "enc").info.config.n_layers == cfg.n_layers


class _Marker:
    """Unpickling this would create a file: what a malicious checkpoint does."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_import_original_refuses_code_in_pickle(tmp_path, vocab_dir):
    vocab, codes, words = write_fastbpe(vocab_dir, tmp_path)
    marker = tmp_path / "PWNED"
    pth = tmp_path / "evil.pth"
    torch.save({"model": {"embeddings.weight": torch.zeros(2, 2)}, "params": _Marker(marker)}, pth)
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        import_original(pth, vocab, codes, tmp_path / "out")
    args = ["import", "original", str(pth), "--vocab", str(vocab), "--codes", str(codes), str(tmp_path / "out")]
    assert cli_main(args) == 1
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_import_original_trust_pickle_and_size_mismatch(tmp_path, vocab_dir):
    import argparse

    vocab, codes, words = write_fastbpe(vocab_dir, tmp_path)
    cfg = tiny_config(len(words), use_lang_emb=False)
    model = TransformerModel(cfg)
    # an argparse.Namespace (as fairseq stores its options) is read without running code
    params = argparse.Namespace(**{**original_params(cfg), "use_lang_emb": False})
    pth = tmp_path / "ns.pth"
    torch.save(original_checkpoint(words, params, model=model), pth)
    report = import_original(pth, vocab, codes, tmp_path / "out")
    assert load_pretrained(report.directory).model.lang_embeddings is None
    # any other object is not plain data: refused unless --trust-pickle
    torch.save({**original_checkpoint(words, params, model=model), "extra": Path("x")}, pth)
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        import_original(pth, vocab, codes, tmp_path / "out_refused")
    assert not (tmp_path / "out_refused").exists()
    import_original(pth, vocab, codes, tmp_path / "out_trusted", trust_pickle=True)
    # a vocabulary that is not the model's: both sizes named
    short = tmp_path / "short_vocab"
    short.write_text("".join(vocab.read_text().splitlines(keepends=True)[:-1]))
    data = torch.load(pth, weights_only=False)
    del data["dico_id2word"]
    torch.save(data, pth)
    with pytest.raises(CheckpointError, match=rf"{len(words) - 1} tokens.*vocab_size={len(words)}"):
        import_original(pth, short, codes, tmp_path / "out2", trust_pickle=True)
