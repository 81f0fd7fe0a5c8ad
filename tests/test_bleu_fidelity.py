"""BLEU that means what it says: multi-bleu.perl's rules for tokenized BLEU, raw references
kept by `xlm prepare`, whole sources, and one decoding setting per translation checkpoint
(the training log and `xlm evaluate bleu` give the same figures)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sacrebleu.metrics import BLEU
from sacremoses import MosesTokenizer

from xlm.cli import main
from xlm.config import ConfigError, load_config
from xlm.data.dataset import PreparedData
from xlm.data.prepare import SETTING_KEYS, same_settings
from xlm.errors import DataError
from xlm.evaluation.bleu import MULTI_BLEU, bleu_files, multi_bleu, raw_reference_path, translate_and_score
from xlm.model.generation import EVAL_DECODE, DecodeConfig, translate_rows
from xlm.model.seq2seq import EncoderDecoder, load_translator
from xlm.model.transformer import ModelConfig
from xlm.tasks.translation import MTConfig, MTTask, run_mt_training
from xlm.text.bpe import BPETokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def eight_pairs(make_tiny_prepared, tmp_path) -> Path:
    """A tiny corpus with eight sentences (en-fr pairs) in each split."""
    return make_tiny_prepared(tmp_path / "data", n_train=8, n_valid=8, seed=3)


# --------------------------------------------------------------------------- multi-bleu.perl


def test_multi_bleu_hand_computed_corpus():
    hyps = ["the cat sat on the mat", "a b c d e"]
    refs = ["the cat is on the mat", "a b c d e"]
    # clipped matches / hypothesis n-grams, summed over the corpus (n = 1..4)
    p = [(5 + 5) / (6 + 5), (3 + 4) / (5 + 4), (1 + 3) / (4 + 3), (0 + 2) / (3 + 2)]
    r = multi_bleu(hyps, refs)
    assert r.precisions == pytest.approx([100 * x for x in p])
    assert r.brevity_penalty == 1.0 and (r.sys_len, r.ref_len) == (11, 11)
    assert r.score == pytest.approx(100 * math.exp(sum(math.log(x) for x in p) / 4))


def test_multi_bleu_zero_order_gives_zero_where_sacrebleu_smooths():
    hyps, refs = ["the cat sat on the mat"], ["the cat is on the mat"]  # no 4-gram matches
    assert multi_bleu(hyps, refs).score == 0.0
    assert BLEU(tokenize="none", force=True).corpus_score(hyps, [refs]).score > 0  # exp smoothing
    # a corpus without any 4-gram (three-word sentences): the perl script's precision is 0 too
    assert multi_bleu(["a b c"], ["a b c"]).score == 0.0
    assert multi_bleu([""], ["a b c d"]).score == 0.0  # no output at all (the script divides by zero)


def test_multi_bleu_brevity_penalty_and_closest_reference_length():
    r = multi_bleu(["a b c d"], ["a b c d e f"])
    assert r.brevity_penalty == pytest.approx(math.exp(1 - 6 / 4))
    assert r.score == pytest.approx(100 * math.exp(1 - 6 / 4))
    assert multi_bleu(["a b c d e f g h"], ["a b c d e f g h i j"]).ref_len == 10
    # two references: the closest length counts, the shorter one on a tie
    assert multi_bleu(["a b c d"], ["a b c d x y"], ["a b c d e f g h i j"]).ref_len == 6
    assert multi_bleu(["a b c d e"], ["a b c d e f"], ["a b c d"]).ref_len == 4
    # clipping by the most frequent occurrence in any one reference
    assert multi_bleu(["x x x x"], ["x y z w"], ["x x y z"]).precisions[0] == pytest.approx(50.0)
    # runs of ASCII whitespace separate tokens, as perl's split
    assert multi_bleu(["  a  b\tc d "], ["a b c d"]).score == pytest.approx(100.0)


def test_multi_bleu_equals_sacrebleu_without_smoothing_on_tokenized_text():
    """With one reference and no smoothing the two must agree, whatever the text."""
    tok = MosesTokenizer(lang="en")
    words = "the a cat dog sat on mat , . ! is was it house".split()
    rng = random.Random(0)
    for trial in range(20):
        refs = [" ".join(rng.choices(words, k=rng.randint(4, 14))) for _ in range(6)]
        hyps = [
            " ".join(w if rng.random() < 0.7 else rng.choice(words) for w in r.split()[: rng.randint(3, 14)])
            for r in refs
        ]
        ours = multi_bleu(hyps, refs)
        theirs = BLEU(tokenize="none", smooth_method="none", force=True).corpus_score(hyps, [refs])
        assert ours.score == pytest.approx(theirs.score, abs=1e-9), trial
        assert ours.precisions == pytest.approx(theirs.precisions)
    text = tok.tokenize("It rains in London, doesn't it?", return_str=True, escape=False)
    assert multi_bleu([text], [text]).score == pytest.approx(100.0)


def test_bleu_files_with_multi_bleu(tmp_path):
    hyp, ref = tmp_path / "hyp", tmp_path / "ref"
    hyp.write_text("the cat sat on the mat\na b c d e\n")
    ref.write_text("the cat is on the mat\na b c d e\n")
    assert bleu_files(hyp, ref, MULTI_BLEU).score == pytest.approx(
        multi_bleu(*[p.read_text().splitlines() for p in (hyp, ref)]).score
    )
    out = tmp_path / "b.json"
    assert (
        main(["evaluate", "bleu", "--hyp", str(hyp), "--ref", str(ref), "--tokenize", "multi-bleu", "--json", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["hyp/bleu"] == pytest.approx(bleu_files(hyp, ref, MULTI_BLEU).score)


# --------------------------------------------------------------------------- raw references


def test_prepare_keeps_raw_references_aligned_with_the_binarized_pairs(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    en = ["The cat sat on the mat.", "Mr. Smith's dog barked!", "\u00a0", "It rains in London, doesn't it?"]
    fr = ["Le chat est sur le tapis.", "Le chien de M. Smith aboie !", "Rien.", "Il pleut à Londres, n'est-ce pas ?"]
    for split in ("train", "test"):
        for lang, lines in (("en", en), ("fr", fr)):
            (raw / f"{split}.en-fr.{lang}").write_text("\n".join(lines * (10 if split == "train" else 1)) + "\n")
    data = tmp_path / "data"
    assert main(["prepare", str(raw), str(data), "--vocab-size", "120", "--workers", "1"]) == 0
    prepared = PreparedData.open(data)
    assert len(prepared.para("test", "en", "fr")) == 3  # the pair with an empty English side is dropped
    kept = [0, 1, 3]
    assert raw_reference_path(data, "test", "en", "fr").read_text().splitlines() == [fr[i] for i in kept]
    assert raw_reference_path(data, "test", "fr", "en").read_text().splitlines() == [en[i] for i in kept]
    assert prepared.info["raw_references"] == ["raw/test.en-fr.en", "raw/test.en-fr.fr"]
    assert not raw_reference_path(data, "train", "en", "fr").exists()  # training text is not copied
    # a folder prepared before the raw text was kept is prepared again (scripts/demo.py checks this)
    settings = {k: prepared.info[k] for k in SETTING_KEYS}
    assert same_settings(data, settings)
    info = dict(prepared.info)
    del info["raw_references"]
    (data / "prepare.json").write_text(json.dumps(info))
    assert not same_settings(data, settings)


def _tiny_translator(max_positions: int = 256) -> EncoderDecoder:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=60, n_langs=2, emb_dim=16, n_layers=1, n_heads=2, max_positions=max_positions)
    return EncoderDecoder(cfg).eval()


def test_whole_sources_up_to_the_model_positions_and_the_longer_ones_counted(eight_pairs, tmp_path, monkeypatch):
    data = eight_pairs
    prepared = PreparedData.open(data)
    pairs = prepared.para("valid", "en", "fr")
    lengths = pairs.src.lengths
    seen: list[int] = []
    import xlm.evaluation.bleu as bleu

    real = bleu.translate_rows

    def spy(model, rows, *args, **kwargs):
        seen.extend(len(r) for r in rows)
        return real(model, rows, *args, **kwargs)

    monkeypatch.setattr(bleu, "translate_rows", spy)
    tok = BPETokenizer.from_dir(data)
    model = _tiny_translator()
    out = translate_and_score(model, pairs, 0, 1, "fr", tok, DecodeConfig(max_len_a=0, max_len_b=3), "cpu")
    assert seen == [n + 2 for n in lengths] and out.n_long == 0 and out.long_note("x") == ""
    seen.clear()
    limit = int(lengths.max()) - 1
    short = _tiny_translator(max_positions=limit + 2)
    out = translate_and_score(short, pairs, 0, 1, "fr", tok, DecodeConfig(max_len_a=0, max_len_b=3), "cpu")
    assert seen == [min(n, limit) + 2 for n in lengths]
    assert out.n_long == int((lengths > limit).sum()) > 0
    assert f"longer than the model's {limit} positions" in out.long_note("valid en-fr")


def test_raw_references_must_align(eight_pairs, tmp_path):
    data = eight_pairs
    pairs = PreparedData.open(data).para("valid", "en", "fr")
    ref = tmp_path / "ref.fr"
    ref.write_text("one line\n")
    with pytest.raises(DataError, match=r"ref\.fr: 1 reference lines for 8 binarized sentences"):
        translate_and_score(
            _tiny_translator(), pairs, 0, 1, "fr", BPETokenizer.from_dir(data), EVAL_DECODE, "cpu", raw_refs=ref
        )


# --------------------------------------------------------------------------- one evaluation per checkpoint


def _mt_overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        f'data.path="{data}"', "data.max_tokens=300", "data.max_len=30",
        "model.emb_dim=32", "model.n_layers=2", "model.n_heads=2", "model.max_positions=64",
        "model.dropout=0.0", 'objectives.mt=["en-fr"]', "train.max_steps=30", f'train.out_dir="{out}"',
        "train.eval_every=0", "train.save_every=0", "train.progress=false", "train.eval_at_start=false",
        'eval.splits=["valid"]', "eval.max_sentences=6", "optim.warmup_steps=5", "optim.lr=0.003", *extra,
    ]  # fmt: skip


def test_training_time_bleu_equals_evaluate_bleu_on_the_same_checkpoint(eight_pairs, tmp_path):
    data = eight_pairs
    # raw references beside the binarized data (as `xlm prepare` keeps them): any aligned text
    refs = PreparedData.open(data).para("valid", "en", "fr").tgt
    tok = BPETokenizer.from_dir(data)
    raw = raw_reference_path(data, "valid", "en", "fr")
    raw.parent.mkdir()
    raw.write_text("".join(tok.decode(refs.sentence(i).tolist()).replace(" ", "  ") + " .\n" for i in range(len(refs))))
    run = tmp_path / "run"
    # a decoding setting other than every default: the checkpoint must carry it
    decode = ["eval.beam_size=2", "eval.length_penalty=0.6", "eval.max_len_a=1.1", "eval.max_len_b=3"]
    metrics = run_mt_training(load_config(MTConfig, None, _mt_overrides(data, run, *decode)))
    extra = load_translator(run / "final").info.extra
    assert extra["decode"] == {
        "beam_size": 2,
        "length_penalty": 0.6,
        "early_stopping": False,
        "max_len_a": 1.1,
        "max_len_b": 3,
    }
    assert extra["eval_directions"] == ["en-fr"]
    out = tmp_path / "bleu.json"
    argv = ["evaluate", "bleu", str(run / "final"), "--data", str(data), "--split", "valid", "--max-sentences", "6"]
    assert main([*argv, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(figures) == {"en-fr/bleu", "en-fr/bleu_norm", "en-fr/bleu_tok"}
    for key in ("bleu", "bleu_norm", "bleu_tok"):
        assert figures[f"en-fr/{key}"] == metrics[f"valid/{key}/en-fr"], key
    assert (
        metrics["valid/bleu"] == metrics["valid/bleu/en-fr"]
        and metrics["valid/bleu_norm"] == metrics["valid/bleu_norm/en-fr"]
    )
    # the raw references given as a file: the same figures
    assert main([*argv, "--ref", str(raw), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == figures
    # options still override the recorded setting
    assert main([*argv, "--beam", "1", "--max-len-b", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["en-fr/bleu_tok"] == 0.0  # at most one word per sentence: no 4-grams


def test_decode_setting_round_trip_and_default():
    cfg = DecodeConfig(beam_size=3, length_penalty=0.7, early_stopping=True, max_len_a=1.2, max_len_b=4)
    assert DecodeConfig.from_json(cfg.to_json()) == cfg
    assert DecodeConfig.from_json(None) == EVAL_DECODE == DecodeConfig(max_len_a=1.5, max_len_b=10)
    assert cfg.override(beam_size=None, max_len_b=7) == cfg.model_copy(update={"max_len_b": 7})


def test_stopping_on_raw_bleu_without_raw_references_is_a_clear_error(eight_pairs, tmp_path):
    data = eight_pairs
    cfg = load_config(MTConfig, None, _mt_overrides(data, tmp_path / "run", 'train.stopping_metric="valid/bleu"'))
    with pytest.raises(ConfigError, match=r"'valid/bleu' is BLEU against the raw valid references.*'valid/bleu_norm'"):
        MTTask(cfg, 0, log=lambda *a: None)
    ok = load_config(MTConfig, None, _mt_overrides(data, tmp_path / "run", 'train.stopping_metric="valid/bleu_norm"'))
    MTTask(ok, 0, log=lambda *a: None)


def test_evaluation_notes_missing_raw_references_once(eight_pairs, tmp_path):
    data = eight_pairs
    cfg = load_config(MTConfig, None, _mt_overrides(data, tmp_path / "run", "eval.save_hypotheses=false"))
    notes: list[str] = []
    task = MTTask(cfg, 0, log=notes.append)
    task.model.eval()  # as the trainer does before evaluating
    first, second = task.evaluate(), task.evaluate()
    assert first == second and "valid/bleu" not in first and np.isfinite(first["valid/bleu_norm"])
    assert sum("no raw references" in n for n in notes) == 1


# --------------------------------------------------------------------------- length limits


@pytest.mark.parametrize("beam", [1, 3])
def test_an_output_does_not_depend_on_the_sentences_batched_with_it(beam):
    """The length limit a * L + b is each sentence's own: a short source decodes to the same
    words alone and batched beside a long one (an untrained model runs to its limit)."""
    model = _tiny_translator()
    with torch.no_grad():
        model.decoder.pred_bias[1] = -1e4  # never </s>: every output runs to its limit
    g = torch.Generator().manual_seed(0)
    short = np.concatenate(([1], torch.randint(14, 60, (5,), generator=g).numpy(), [1]))
    long = np.concatenate(([1], torch.randint(14, 60, (40,), generator=g).numpy(), [1]))
    cfg = DecodeConfig(beam_size=beam, max_len_a=1.0, max_len_b=2)
    alone = translate_rows(model, [short], 0, 1, cfg, "cpu")
    together = translate_rows(model, [short, long], 0, 1, cfg, "cpu")
    assert together[0] == alone[0] and len(alone[0]) + 2 == 1.0 * len(short) + 2
    # back-translation keeps the original's one limit per batch, from its longest source
    per_batch = cfg.override(sentence_limits=False)
    assert translate_rows(model, [short], 0, 1, per_batch, "cpu") == alone
    assert len(translate_rows(model, [short, long], 0, 1, per_batch, "cpu")[0]) > len(alone[0])
