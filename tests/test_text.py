"""Normalization, BPE learning/encoding, α-sampling, and exact equivalence with HF's XLMTokenizer."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlm.errors import DataError, XLMError
from xlm.text.bpe import (
    BPETokenizer,
    TextEncoder,
    encode_text,
    learn_bpe,
    read_merges,
    sample_line_counts,
    sample_sizes,
    sampling_probs,
)
from xlm.text.normalize import (
    Normalizer,
    lowercase_and_remove_accent,
    normalize_lines,
    remove_non_printing_char,
    replace_unicode_punct,
)
from xlm.text.vocab import MERGES_FILE, SPECIAL_TOKENS, UNK_INDEX, VOCAB_FILE, Vocabulary

hf_xlm = pytest.importorskip("transformers.models.xlm.tokenization_xlm")

# the shipped corpus (XLM_TEST_CORPUS points elsewhere, e.g. at a fresh build)
CORPUS = Path(os.environ.get("XLM_TEST_CORPUS", Path(__file__).resolve().parents[1] / "data" / "corpus"))
CORPUS_LANGS = ("en", "fr", "de", "es", "ru", "hi")

EN = [
    "The quick brown fox jumps over the lazy dog.",
    "Mr. Smith's café costs 3.5%… really？",
    "Hello, world! “Quoted” text — here, (allegedly).",
    "It is raining today in London; isn't it?",
]
FR = [
    "L'homme est là, à l'école. Très bien !",
    "Où est-ce qu'il va ?",
    "« Bonjour » dit-il.",
    "Il pleut aujourd'hui à Paris.",
]


# --------------------------------------------------------------------------- normalization


def test_normalizer_examples() -> None:
    assert Normalizer("en")("Hello, world!") == "Hello , world !"
    assert Normalizer("en")("Mr. Smith's dog") == "Mr. Smith 's dog"
    assert Normalizer("fr")("L'homme est là.") == "L' homme est là ."
    assert Normalizer("en")("a\u200bb\x07c\td") == "abcd"  # C* characters are dropped
    assert Normalizer("en")("１２３，ok。 Next") == "123 , ok . Next"
    assert Normalizer("de", lowercase_and_remove_accent=True)("Äpfel ÜBER Straße") == "apfel uber straße"
    assert Normalizer("fr", lowercase_and_remove_accent=True)("Élève à l'école") == "eleve a l' ecole"
    assert Normalizer("ro")("Şcoală") == "Scoala"
    assert Normalizer("en")("") == ""


def test_normalizer_rejects_bad_language_code() -> None:  # zh/ja/th: tests/test_segment.py
    with pytest.raises(XLMError, match="ISO"):
        Normalizer("English")


def test_normalize_lines_is_lazy() -> None:
    def lines():
        yield "One."
        yield "Two."
        raise AssertionError("read too far")

    it = normalize_lines(lines(), "en")
    assert next(it) == "One ."
    assert next(it) == "Two ."


text_strategy = st.text(
    alphabet=st.sampled_from(list("abcÉéü ，。．、“”：？！（）１２％…’〈〉【】\t\u200b\x00 \u3000\u0301") + ["\n"]),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(text_strategy)
def test_steps_match_hf(text: str) -> None:
    assert replace_unicode_punct(text) == hf_xlm.replace_unicode_punct(text)
    assert remove_non_printing_char(text) == hf_xlm.remove_non_printing_char(text)
    words = text.split()
    assert lowercase_and_remove_accent(words) == hf_xlm.lowercase_and_remove_accent(words)


moses_text = st.text(alphabet=st.sampled_from(list("aZ1 ,.;:!?%()`'\"„“”–—´‘’‚…«»\xa0nºCcm\r")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(moses_text, st.sampled_from(["en", "fr", "de", "ru"]))
def test_punct_normalize_is_sacremoses(text: str, lang: str) -> None:
    from sacremoses import MosesPunctNormalizer

    assert Normalizer(lang).punct_normalize(text) == MosesPunctNormalizer(lang=lang).normalize(text)


# --------------------------------------------------------------------------- sampling


def test_sampling_probs_alpha() -> None:
    counts = {"en": 900, "ne": 100}
    assert sampling_probs(counts, 1.0) == pytest.approx({"en": 0.9, "ne": 0.1})
    assert sampling_probs(counts, 0.0) == pytest.approx({"en": 0.5, "ne": 0.5})
    q = sampling_probs(counts, 0.5)
    assert q["en"] / q["ne"] == pytest.approx(3.0)  # sqrt(9)
    sizes = sample_sizes(counts, 0.5, 1001)
    assert sum(sizes.values()) == 1001
    assert sizes == {"en": 751, "ne": 250}
    with pytest.raises(DataError):
        sampling_probs({"en": 0}, 0.5)


def test_sample_line_counts_repeats_small_languages() -> None:
    rng = np.random.default_rng(0)
    reps = sample_line_counts(10, 25, rng)
    assert reps.sum() == 25 and reps.min() == 2 and reps.max() == 3
    reps = sample_line_counts(100, 30, rng)
    assert reps.sum() == 30 and set(reps.tolist()) <= {0, 1}


def test_learn_bpe_samples_languages_by_alpha(tmp_path: Path) -> None:
    big, small = tmp_path / "big.txt", tmp_path / "small.txt"
    big.write_text("".join(f"big {i}\n" for i in range(4000)))
    small.write_text("".join(f"small {i}\n" for i in range(40)))
    report = learn_bpe({"en": [big], "ne": [small]}, tmp_path / "v", 100, alpha=0.5, max_sentences=1000)
    assert report.line_counts == {"en": 4000, "ne": 40}
    # p = (0.990, 0.0099) -> q ∝ sqrt(p) = (0.909, 0.0909): the small language is up-sampled 9x
    assert report.sample_sizes == {"en": 909, "ne": 91}
    info = json.loads((tmp_path / "v" / "bpe.json").read_text())
    assert info["sample_sizes"] == {"en": 909, "ne": 91}


# --------------------------------------------------------------------------- BPE


@pytest.mark.slow
def test_learning_is_reproducible_across_processes(tmp_path: Path) -> None:
    """Same text, same seed -> byte-identical vocabulary, also in another process (the
    tokenizers trainer alone orders some symbols by a randomly seeded hash map)."""
    text = tmp_path / "fr.tok"
    text.write_text("".join(Normalizer("fr")(x) + "\n" for x in FR * 30) + "a b c d e , . ; ! ?\n", encoding="utf-8")
    code = (
        "import sys; from pathlib import Path; from xlm.text.bpe import learn_bpe; "
        "learn_bpe({'fr': [Path(sys.argv[1])]}, sys.argv[2], 150)"
    )
    for out in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(text), str(tmp_path / out)], check=True)
    learn_bpe({"fr": [text]}, tmp_path / "c", 150)
    for name in (VOCAB_FILE, MERGES_FILE):
        assert (
            (tmp_path / "a" / name).read_bytes()
            == (tmp_path / "b" / name).read_bytes()
            == (tmp_path / "c" / name).read_bytes()
        )


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bpe")
    files = {}
    for lang, lines in (("en", EN), ("fr", FR)):
        p = d / f"{lang}.tok"
        p.write_text("".join(Normalizer(lang)(x) + "\n" for x in lines * 20), encoding="utf-8")
        files[lang] = [p]
    learn_bpe(files, d / "vocab", 400, lowercase_and_remove_accent=False)
    return d / "vocab"


def test_vocabulary_files_in_hf_layout(small_vocab: Path) -> None:
    mapping = json.loads((small_vocab / VOCAB_FILE).read_text(encoding="utf-8"))
    assert [t for t, i in sorted(mapping.items(), key=lambda kv: kv[1])][:14] == SPECIAL_TOKENS
    assert sorted(mapping.values()) == list(range(len(mapping)))
    text = (small_vocab / MERGES_FILE).read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.startswith("#")
    merges = read_merges(small_vocab / MERGES_FILE)
    assert len(merges) == len(text.splitlines())
    assert all(a + b in mapping for a, b in merges)
    Vocabulary.from_dir(small_vocab)  # the special-token layout is checked there


def test_bpe_encode_decode_round_trip(small_vocab: Path) -> None:
    bpe = BPETokenizer.from_dir(small_vocab)
    for lang, lines in (("en", EN), ("fr", FR)):
        norm = Normalizer(lang)
        for line in lines:
            ids = bpe.encode(norm(line))
            assert UNK_INDEX not in ids
            assert bpe.decode(ids) == norm(line)
            assert [bpe.vocab.token(i) for i in ids] == bpe.tokens(norm(line))
        assert bpe.encode_batch([norm(x) for x in lines]) == [bpe.encode(norm(x)) for x in lines]
    assert bpe.tokens("the") == ["the</w>"]
    assert bpe.decode([1, *bpe.encode("the"), 1, 2]) == "the"  # specials dropped


def test_bpe_unknown_characters(small_vocab: Path) -> None:
    bpe = BPETokenizer.from_dir(small_vocab)
    ids = bpe.encode("the жук")
    assert ids.count(UNK_INDEX) == 3
    assert bpe.unknown_words("the жук and the ж") == ["жук", "ж"]
    # \x1f is whitespace for Python's str.split but not for the Rust pre-tokenizer
    assert bpe.unknown_words("\x1f\r\x1b the") == ["\x1f", "\x1b"]


def test_bpe_rejects_inconsistent_files(tmp_path: Path, small_vocab: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / VOCAB_FILE).write_bytes((small_vocab / VOCAB_FILE).read_bytes())
    (d / MERGES_FILE).write_text("zz qq\n")  # outside the vocabulary: accepted as HF does, gives <unk>
    assert BPETokenizer.from_dir(d).n_extra == 3  # zz, qq and zzqq map to <unk> (see the HF test below)
    (d / MERGES_FILE).write_bytes(b"\xff\xfe a\n")
    with pytest.raises(DataError, match="not UTF-8"):
        BPETokenizer.from_dir(d)
    (d / MERGES_FILE).write_text("lonely\n")
    with pytest.raises(DataError, match="merges.txt:1"):
        BPETokenizer.from_dir(d)


def test_text_encoder_and_detokenize(small_vocab: Path) -> None:
    enc = TextEncoder(small_vocab, "fr")
    assert enc.lowercase_and_remove_accent is False  # recorded in bpe.json
    ids = enc.encode("Où est-ce qu'il va ?")
    assert ids == enc.bpe.encode(Normalizer("fr")("Où est-ce qu'il va ?"))
    assert enc.decode(ids) == "Où est-ce qu'il va ?"
    assert encode_text(FR, "fr", small_vocab) == enc.encode_batch(FR)
    assert TextEncoder(small_vocab, "en").decode(TextEncoder(small_vocab, "en").encode(EN[3])) == EN[3]


def _assert_same_as_hf(vocab_dir: Path, lines_by_lang: dict[str, list[str]], lowercase: bool) -> int:
    """Our ids == HF XLMTokenizer's ids for every line; returns the number of lines checked.

    HF's public ``tokenize(text, lang=...)`` does not forward ``lang`` to ``_tokenize`` (the
    base class drops it: transformers 5.x, and earlier versions), so every language silently
    gets the English Moses rules there. We compare against HF's per-language pipeline
    (``_tokenize(text, lang=lang)``) and, for the public API, check that any difference is
    exactly the English-rules one.
    """
    hf = hf_xlm.XLMTokenizer(
        str(vocab_dir / VOCAB_FILE), str(vocab_dir / MERGES_FILE), do_lowercase_and_remove_accent=lowercase
    )
    n = 0
    for lang, lines in lines_by_lang.items():
        ours = TextEncoder(vocab_dir, lang, lowercase)
        ours_en = TextEncoder(vocab_dir, "en", lowercase, tokenizer=ours.bpe)
        for line in lines:
            ids = ours.encode(line)
            assert ids == hf.convert_tokens_to_ids(hf._tokenize(line, lang=lang)), (lang, line)
            public = hf.convert_tokens_to_ids(hf.tokenize(line, lang=lang))
            assert public == ids or public == ours_en.encode(line), (lang, line)
            n += 1
    return n


@pytest.mark.parametrize("lowercase", [False, True])
def test_equivalent_to_hf_on_small_text(tmp_path: Path, lowercase: bool) -> None:
    files = {}
    for lang, lines in (("en", EN), ("fr", FR)):
        p = tmp_path / f"{lang}.tok"
        p.write_text("".join(Normalizer(lang, lowercase)(x) + "\n" for x in lines * 5), encoding="utf-8")
        files[lang] = [p]
    learn_bpe(files, tmp_path, 120, lowercase_and_remove_accent=lowercase)  # small: many pieces, unknowns
    extra = ["Zoë's naïve façade ЖЖ", "tabs\tand\u200bzero-width", "  spaced   out  "]
    assert _assert_same_as_hf(tmp_path, {"en": EN + extra, "fr": FR + extra}, lowercase) == 14


# --------------------------------------------------------------------------- the shipped corpus


def _head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def corpus_vocabs(tmp_path_factory) -> dict[bool, Path]:
    """Vocabularies (lowercased or not) learned on the first 500 train lines of each language."""
    missing = [lang for lang in CORPUS_LANGS if not (CORPUS / f"train.{lang}.gz").is_file()]
    if missing:
        pytest.skip(f"shipped corpus not built: {CORPUS}/train.{{{','.join(missing)}}}.gz missing")
    root = tmp_path_factory.mktemp("corpus_bpe")
    tokens = {
        lang: [Normalizer(lang).tokens(x) for x in _head(CORPUS / f"train.{lang}.gz", 500)] for lang in CORPUS_LANGS
    }
    out = {}
    for lowercase in (False, True):
        files = {}
        for lang, sents in tokens.items():
            p = root / f"{lang}.{lowercase}.tok"
            with open(p, "w", encoding="utf-8") as f:
                for words in sents:
                    words = lowercase_and_remove_accent(words) if lowercase else words
                    f.write(" ".join(w for w in words if w) + "\n")
            files[lang] = [p]
        out[lowercase] = root / f"vocab_{lowercase}"
        learn_bpe(files, out[lowercase], 3000, lowercase_and_remove_accent=lowercase)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("lowercase", [False, True])
def test_equivalent_to_hf_on_shipped_corpus(corpus_vocabs: dict[bool, Path], lowercase: bool) -> None:
    lines = {}
    for lang in CORPUS_LANGS:
        path = CORPUS / f"test.{lang}.gz"
        if not path.is_file():
            pytest.fail(f"{path} missing while train.{lang}.gz exists")
        lines[lang] = _head(path, 200)
    n = _assert_same_as_hf(corpus_vocabs[lowercase], lines, lowercase)
    assert n == sum(len(v) for v in lines.values()) and n >= 6 * 100


def test_merges_outside_the_vocabulary_give_unk_like_hf(tmp_path):
    """Released vocabularies can hold merges whose result is not in vocab.json: HF's
    XLMTokenizer applies them and maps the piece to <unk>; so must we (and not crash)."""
    import json

    from transformers import XLMTokenizer

    from xlm.text.bpe import BPETokenizer
    from xlm.text.vocab import SPECIAL_TOKENS

    tokens = SPECIAL_TOKENS + ["a", "b", "c</w>", "ab", "abc</w>", "b</w>", "a</w>"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    # "b c</w>" -> "bc</w>" is not in the vocabulary
    (tmp_path / "merges.txt").write_text("b c</w>\na b\nab c</w>\n")
    ours = BPETokenizer.from_dir(tmp_path)
    hf = XLMTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), do_lowercase_and_remove_accent=False)
    for line in ["abc", "bc", "ab", "a b"]:
        assert ours.encode(line) == hf.convert_tokens_to_ids(hf._tokenize(line, lang="en")), line
    assert ours.encode("bc") == [3]


def test_line_batches_name_the_bad_line_after_yielding_the_good_ones():
    import io

    from xlm.text.lines import line_batches, read_lines

    stream = io.BytesIO(b"a\r\nb\nc\n\xff\nd\n")
    batches = line_batches(stream, 2)
    assert next(batches) == ["a", "b"]
    assert next(batches) == ["c"]
    with pytest.raises(DataError, match=r"<stdin>:4: invalid UTF-8"):
        next(batches)
    assert read_lines(io.BytesIO(b"x\ny\n"), "f.txt") == ["x", "y"]
