"""Decoding with an :class:`~xlm.model.seq2seq.EncoderDecoder`: greedy and beam search,
batched, with the decoder's key/value cache.

With the cache each step feeds only the newest token and attends to the stored keys and
values, so producing T tokens costs O(T) decoder passes of one position instead of
re-running the whole prefix (O(T^2) positions); ``use_cache=False`` does the latter and
exists to check the former. Outputs are ``</s> w1 .. wn </s>`` rows padded with ``<pad>``;
a row that reaches its length limit without ``</s>`` gets one as its last token. The limit is
``a * L + b`` for each sentence's own source length ``L`` (so an output does not depend on the
sentences batched with it), or, with ``sentence_limits=False`` (back-translation, as the
original), for the longest source of the batch.

Beam search keeps ``beam_size`` running hypotheses per sentence; a hypothesis that emits
``</s>`` is finished and scored ``sum log p / length ** length_penalty``. A sentence is done
when it has ``beam_size`` finished hypotheses and either ``early_stopping`` is set or no
running hypothesis can still score better. Beam size 1 gives the greedy output (with
``early_stopping`` or ``length_penalty=0``, where the bound is exact).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from tqdm import tqdm

from xlm.config import Settings
from xlm.data.batching import pad_rows, token_budget_batches
from xlm.model.seq2seq import EncoderDecoder, Translator
from xlm.model.transformer import KVCache
from xlm.text.vocab import XLM_SPECIALS, Specials


class DecodeConfig(Settings):
    beam_size: int = Field(1, ge=1)
    length_penalty: float = 1.0
    early_stopping: bool = False
    max_len_a: float = 1.3  # output length limit: a * source length + b (the original's 1.3 L + 5)
    max_len_b: int = 5
    use_cache: bool = True
    sentence_limits: bool = True  # False: one limit per batch, from its longest source (the original's)

    def to_json(self) -> dict[str, Any]:
        """The setting recorded with a translation checkpoint (``model.json``, ``extra.decode``)."""
        return {k: getattr(self, k) for k in DECODE_KEYS}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> DecodeConfig:
        """The recorded setting; :data:`EVAL_DECODE` for a checkpoint that recorded none."""
        if not data:
            return EVAL_DECODE
        return cls(**{k: data[k] for k in DECODE_KEYS if k in data})

    def override(self, **changes: Any) -> DecodeConfig:
        """This setting with the changes that are not None (command-line options given)."""
        return type(self)(**{**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}})


DECODE_KEYS = ("beam_size", "length_penalty", "early_stopping", "max_len_a", "max_len_b")
# Evaluation and `xlm translate`: greedy, outputs up to 1.5 L + 10 tokens (MTEvalConfig's defaults).
EVAL_DECODE = DecodeConfig(max_len_a=1.5, max_len_b=10)


def max_output_length(src_lengths: Tensor, a: float, b: int, max_positions: int) -> int:
    """``a * L + b`` for the longest source ``L`` (delimiters included), within the model's positions."""
    return max(2, min(int(a * int(src_lengths.max()) + b), max_positions))


def output_limits(src_lengths: Tensor, a: float, b: int, max_positions: int) -> Tensor:
    """``a * L + b`` for each source length ``L`` (delimiters included), within the model's positions."""
    return torch.tensor([max_output_length(n.view(1), a, b, max_positions) for n in src_lengths], dtype=torch.long)


def _encode_source(model: EncoderDecoder, src: Tensor, src_lengths: Tensor, src_lang: int) -> Tensor:
    """The encoder's states of a batch of sources, all of language ``src_lang``."""
    return model.encode(src, src_lengths, torch.full((src.shape[0],), src_lang, device=src.device))


def _next_logits(
    model: EncoderDecoder,
    seqs: Tensor,
    t: int,
    lang: Tensor,
    memory: Tensor,
    memory_lengths: Tensor,
    cache: KVCache | None,
) -> Tensor:
    """Log-probabilities ``(B, V)`` of token ``t`` after the prefixes ``seqs[:, :t]``: the
    decoder reads the newest token alone with a cache, else the whole prefix."""
    inputs = seqs[:, t - 1 : t] if cache is not None else seqs[:, :t]
    h = model.decoder(inputs, langs=lang, causal=True, memory=memory, memory_lengths=memory_lengths, cache=cache)
    return F.log_softmax(model.decoder.predict(h[:, -1]).float(), dim=-1)


@torch.no_grad()
def greedy_decode(
    model: EncoderDecoder,
    src: Tensor,
    src_lengths: Tensor,
    src_lang: int,
    tgt_lang: int,
    max_len: int,
    use_cache: bool = True,
    limits: Tensor | None = None,
    specials: Specials = XLM_SPECIALS,
) -> tuple[Tensor, Tensor]:
    """Argmax decoding; returns ``(tokens (B, T), lengths (B,))``. Row ``i`` is at most
    ``limits[i]`` tokens long (default: ``max_len``). Finished rows leave the batch (and the
    cache), so a batch costs what its unfinished sentences cost. Rows are ``start w .. end``
    with the vocabulary's ``specials`` (XLM: ``</s> w .. </s>``), padded with its pad id."""
    bs, device = src.shape[0], src.device
    limit = torch.full((bs,), max_len, dtype=torch.long, device=device) if limits is None else limits.to(device)
    memory = _encode_source(model, src, src_lengths, src_lang)
    start, end = specials.start, specials.end
    out = torch.full((bs, max_len), specials.pad, dtype=torch.long, device=device)
    out[:, 0] = start
    lengths = torch.full((bs,), max_len, dtype=torch.long, device=device)
    active = torch.arange(bs, device=device)
    mem_len = src_lengths
    cache = KVCache() if use_cache else None
    for t in range(1, max_len):
        lang = torch.full((len(active),), tgt_lang, device=device)
        logp = _next_logits(model, out[active], t, lang, memory, mem_len, cache)
        word = torch.where(limit[active] - 1 <= t, end, logp.argmax(-1))  # no room left: </s>
        out[active, t] = word
        finished = word == end
        lengths[active[finished]] = t + 1
        if bool(finished.all()):
            break
        if bool(finished.any()):
            keep = (~finished).nonzero().squeeze(1)
            active, memory, mem_len = active[keep], memory[keep], mem_len[keep]
            if cache is not None:
                cache.reorder(keep)
    return out[:, : int(lengths.max())], lengths


class _Finished:
    """The best ``n`` finished hypotheses of one sentence."""

    def __init__(self, n: int, length_penalty: float, early_stopping: bool, max_steps: int):
        self.n, self.lp, self.early, self.max_steps = n, length_penalty, early_stopping, max_steps
        self.items: list[tuple[float, list[int]]] = []

    def score(self, logprob: float, n_tokens: int) -> float:
        return logprob / n_tokens**self.lp

    def worst(self) -> float:
        return min(s for s, _ in self.items) if self.items else -float("inf")

    def add(self, words: list[int], logprob: float) -> None:
        s = self.score(logprob, len(words) + 1)  # the words and the final </s>
        if len(self.items) < self.n or s > self.worst():
            self.items.append((s, words))
            if len(self.items) > self.n:
                self.items.remove(min(self.items, key=lambda x: x[0]))

    def is_done(self, best_running: float, n_tokens: int) -> bool:
        """No running hypothesis (best log-probability ``best_running`` after ``n_tokens``
        tokens) can finish with a better score than the worst kept one."""
        if len(self.items) < self.n:
            return False
        if self.early:
            return True
        # log-probabilities only decrease; the most favourable future length depends on the sign of lp
        length = self.max_steps if self.lp > 0 else n_tokens + 1
        return self.worst() >= self.score(best_running, length)

    def best(self) -> list[int]:
        return max(self.items, key=lambda x: x[0])[1]


@torch.no_grad()
def beam_search(
    model: EncoderDecoder,
    src: Tensor,
    src_lengths: Tensor,
    src_lang: int,
    tgt_lang: int,
    max_len: int,
    beam_size: int,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    use_cache: bool = True,
    limits: Tensor | None = None,
    specials: Specials = XLM_SPECIALS,
) -> tuple[Tensor, Tensor]:
    """Batched beam search; returns the best hypothesis of each sentence as ``(tokens, lengths)``,
    that of sentence ``i`` at most ``limits[i]`` tokens long (default: ``max_len``)."""
    bs, n, device = src.shape[0], beam_size, src.device
    limit = [max_len] * bs if limits is None else [int(x) for x in limits.tolist()]
    memory = _encode_source(model, src, src_lengths, src_lang)
    memory, mem_len = memory.repeat_interleave(n, dim=0), src_lengths.repeat_interleave(n)  # n rows a sentence
    lang = torch.full((bs * n,), tgt_lang, device=device)
    start, end, pad = specials.start, specials.end, specials.pad
    seqs, scores = _initial_beams(bs, n, max_len, specials, device)
    finished = [_Finished(n, length_penalty, early_stopping, limit[b] - 1) for b in range(bs)]
    done = [False] * bs
    cache = KVCache() if use_cache else None
    for t in range(1, max_len):
        logp = _next_logits(model, seqs, t, lang, memory, mem_len, cache)  # (B*n, V)
        ending = [b for b in range(bs) if not done[b] and t >= limit[b] - 1]
        if ending:  # no room left: every running hypothesis of these sentences ends here
            final = (scores.view(-1) + logp[:, end]).tolist()
            for b in ending:
                _end_running(finished[b], final[b * n : (b + 1) * n], seqs[b * n : (b + 1) * n, 1:t])
                done[b] = True
            if all(done):
                break
        next_beams = _select_beams(finished, done, scores, logp, seqs[:, 1:t], t, specials)
        if all(done):
            break
        next_scores, next_words, next_rows = zip(*next_beams)
        rows = torch.tensor(next_rows, device=device)
        seqs = seqs.index_select(0, rows)
        seqs[:, t] = torch.tensor(next_words, device=device)
        scores = torch.tensor(next_scores, device=device).view(bs, n)
        if cache is not None:  # every row stays among its sentence's beams: same encoder output
            cache.reorder(rows, cross=False)
    best = [np.asarray([start, *f.best(), end], dtype=np.int64) for f in finished]
    tokens, lengths = pad_rows(best, pad)
    return tokens.to(device), lengths.to(device)


def _select_beams(
    finished: list[_Finished], done: list[bool], scores: Tensor, logp: Tensor, words: Tensor, t: int, specials: Specials
) -> list[tuple[float, int, int]]:
    """The next running hypotheses ``(score, word, row)`` of every sentence, ``n`` each in row
    order, from the running ones (``scores`` ``(bs, n)``, ``words`` every row's words so far)
    and the step's log-probabilities ``logp`` ``(bs * n, V)``. A sentence found done here is
    marked in ``done``; a sentence that is done gets ``n`` placeholder rows."""
    bs, n = scores.shape
    vocab = logp.shape[-1]
    top_scores, top_ids = (scores.view(-1, 1) + logp).view(bs, n * vocab).topk(min(2 * n, n * vocab), dim=1)
    top_scores_l, top_ids_l = top_scores.tolist(), top_ids.tolist()
    next_beams: list[tuple[float, int, int]] = []
    for b in range(bs):
        beam: list[tuple[float, int, int]] = []
        if not done[b]:
            beam = _next_beam(finished[b], top_scores_l[b], top_ids_l[b], b * n, n, vocab, words, specials.end)
            done[b] = not beam or finished[b].is_done(beam[0][0], t)
        if done[b]:
            beam = []
        next_beams += beam + [(-float("inf") if not done[b] else 0.0, specials.pad, b * n)] * (n - len(beam))
    return next_beams


def _initial_beams(bs: int, n: int, max_len: int, specials: Specials, device: torch.device) -> tuple[Tensor, Tensor]:
    """``n`` beams per sentence holding only the start token (``(bs * n, max_len)``, padded),
    and their scores ``(bs, n)``: all start identical, so only the first one is expanded."""
    seqs = torch.full((bs * n, max_len), specials.pad, dtype=torch.long, device=device)
    seqs[:, 0] = specials.start
    scores = torch.zeros(bs, n, device=device)
    scores[:, 1:] = -float("inf")
    return seqs, scores


def _end_running(finished: _Finished, final: list[float], words: Tensor) -> None:
    """Every running hypothesis of a sentence (``words``, one row each) ends, with the
    log-probabilities ``final`` of ending now (those at ``-inf`` were never running)."""
    for k, score in enumerate(final):
        if score > -float("inf"):
            finished.add(words[k].tolist(), score)


def _next_beam(
    finished: _Finished,
    top_scores: list[float],
    top_ids: list[int],
    first_row: int,
    n: int,
    vocab: int,
    words: Tensor,
    end: int,
) -> list[tuple[float, int, int]]:
    """A sentence's next running hypotheses, at most ``n`` ``(score, word, row)``, from its best
    candidates (``top_ids`` index its ``n`` rows x ``vocab`` words, best first; ``words`` holds
    every row's words so far): a candidate ending with ``end`` goes to ``finished`` instead."""
    beam: list[tuple[float, int, int]] = []
    for s, idx in zip(top_scores, top_ids):
        if s == -float("inf"):
            break
        row, word = first_row + idx // vocab, idx % vocab
        if word == end:
            finished.add(words[row].tolist(), s)
        else:
            beam.append((s, word, row))
        if len(beam) == n:
            break
    return beam


def generate(
    model: EncoderDecoder,
    src: Tensor,
    src_lengths: Tensor,
    src_lang: int,
    tgt_lang: int,
    cfg: DecodeConfig = DecodeConfig(),
    specials: Specials = XLM_SPECIALS,
) -> tuple[Tensor, Tensor]:
    """Translate one batch (greedy for beam size 1, else beam search); ``specials``: the
    vocabulary's start / end / pad ids."""
    positions = model.decoder.cfg.max_positions
    max_len = max_output_length(src_lengths, cfg.max_len_a, cfg.max_len_b, positions)
    limits = output_limits(src_lengths.cpu(), cfg.max_len_a, cfg.max_len_b, positions) if cfg.sentence_limits else None
    if cfg.beam_size == 1:
        return greedy_decode(model, src, src_lengths, src_lang, tgt_lang, max_len, cfg.use_cache, limits, specials)
    return beam_search(
        model, src, src_lengths, src_lang, tgt_lang, max_len, cfg.beam_size, cfg.length_penalty, cfg.early_stopping,
        cfg.use_cache, limits, specials,
    )  # fmt: skip


def output_words(tokens: Tensor, lengths: Tensor) -> list[list[int]]:
    """The word ids of each generated row, without the ``</s>`` delimiters."""
    return [row[1 : int(n) - 1] for row, n in zip(tokens.tolist(), lengths.tolist())]


def translate_rows(
    model: EncoderDecoder,
    rows: Sequence[np.ndarray],
    src_lang: int,
    tgt_lang: int,
    cfg: DecodeConfig,
    device: torch.device | str,
    max_tokens: int = 4000,
    specials: Specials = XLM_SPECIALS,
    progress: str | None = None,
) -> list[list[int]]:
    """Translate ``</s> w .. </s>`` rows (``start w .. end`` of the vocabulary's ``specials``;
    in any number), batched by a token budget with similar lengths together; returns the
    output words of each row, in the input order. With ``progress``, a progress bar of the
    sentences on standard error, labelled so."""
    out: list[list[int]] = [[] for _ in rows]
    with tqdm(total=len(rows), desc=progress, unit="sent", disable=progress is None, leave=False) as bar:
        for ids, words in _translate_batches(model, rows, src_lang, tgt_lang, cfg, device, max_tokens, specials):
            for i, w in zip(ids, words):
                out[int(i)] = w
            bar.update(len(ids))
    return out


def _translate_batches(
    model: EncoderDecoder,
    rows: Sequence[np.ndarray],
    src_lang: int,
    tgt_lang: int,
    cfg: DecodeConfig,
    device: torch.device | str,
    max_tokens: int,
    specials: Specials = XLM_SPECIALS,
) -> Iterator[tuple[np.ndarray, list[list[int]]]]:
    if not rows:
        return
    lengths = np.asarray([len(r) for r in rows], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    # the decoder side grows to ~1.3 x the source and beam search multiplies the rows
    budget = max(1, max_tokens // (2 * cfg.beam_size))
    for ids in token_budget_batches(lengths, order, budget):
        src, src_len = pad_rows([np.asarray(rows[i], dtype=np.int64) for i in ids], specials.pad)
        tokens, lens = generate(model, src.to(device), src_len.to(device), src_lang, tgt_lang, cfg, specials)
        yield ids, output_words(tokens.cpu(), lens.cpu())


def translate_text(
    tr: Translator,
    lines: Sequence[str],
    src: str,
    tgt: str,
    cfg: DecodeConfig,
    device: torch.device | str,
    max_tokens: int = 4000,
    tokenized: bool = False,
    progress: bool = False,
) -> tuple[list[str], int]:
    """Raw ``src`` lines -> ``tgt`` lines with a translation checkpoint: normalized and
    BPE-encoded with its vocabulary, translated, BPE undone and detokenized (Moses-tokenized
    with ``tokenized``). An empty line stays empty. Also returns how many lines were longer
    than the model's positions (their first tokens were translated). ``progress``: a progress
    bar on standard error."""
    from xlm.text.tokenizer import TextEncoder, load_tokenizer

    src_id, tgt_id = tr.info.lang_id(src), tr.info.lang_id(tgt)
    lower = tr.info.lowercase_and_remove_accent
    bpe = load_tokenizer(tr.directory)
    sp = bpe.vocab.specials
    src_enc = TextEncoder(tr.directory, src, lower, bpe)
    tgt_enc = TextEncoder(tr.directory, tgt, lower, bpe)
    limit = tr.model.encoder.cfg.max_positions - 2
    ids = src_enc.encode_batch(list(lines))
    n_long = sum(len(x) > limit for x in ids)
    todo = [i for i, x in enumerate(ids) if x]
    rows = [np.asarray([sp.start, *ids[i][:limit], sp.end], dtype=np.int64) for i in todo]
    label = f"translate {src}-{tgt}" if progress else None
    words = translate_rows(tr.model, rows, src_id, tgt_id, cfg, device, max_tokens, sp, progress=label)
    out = [""] * len(lines)
    for i, w in zip(todo, words):
        out[i] = tgt_enc.bpe.decode(w) if tokenized else tgt_enc.decode(w)
    return out, n_long
