"""Decoding: greedy and beam search agree where they must, the key/value cache changes
nothing but the cost, and the cost of a cached decode grows linearly with the output."""

import pytest
import torch

from xlm.model.generation import DecodeConfig, beam_search, generate, greedy_decode, translate_rows
from xlm.model.seq2seq import EncoderDecoder
from xlm.model.transformer import ModelConfig
from xlm.objectives.translation import PairBatch, translation_loss
from xlm.text.vocab import EOS_INDEX, PAD_INDEX

V = 40


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0) -> EncoderDecoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, n_langs=2, emb_dim=32, n_layers=2, n_heads=4, max_positions=64, dropout=0.0)
    return EncoderDecoder(cfg, decoder_layers=2).eval()


@pytest.fixture(scope="module")
def model() -> EncoderDecoder:
    """A model half-way through learning to copy: outputs of varied lengths, and a beam that
    sometimes finds more likely outputs than greedy decoding."""
    m = tiny_model(0).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for step in range(60):
        src, lengths = source_batch(1000 + step, bs=16)
        loss = translation_loss(m, PairBatch(src, lengths, 0, src, lengths, 1)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def source_batch(seed: int = 0, bs: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 11, (bs,), generator=g)
    src = torch.full((bs, int(lengths.max())), PAD_INDEX)
    for i, n in enumerate(lengths.tolist()):
        src[i, :n] = torch.randint(14, V, (n,), generator=g)
        src[i, 0] = src[i, n - 1] = EOS_INDEX
    return src, lengths


def sequence_logprob(model: EncoderDecoder, src, src_len, tokens, lengths) -> torch.Tensor:
    """Teacher-forced log-probability of each output row."""
    inputs, in_len = tokens[:, :-1], lengths - 1
    h = model(src, src_len, torch.zeros_like(src_len), inputs, in_len, torch.ones_like(src_len))
    logp = torch.log_softmax(model.decoder.predict(h), -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    mask = torch.arange(inputs.shape[1])[None, :] < in_len[:, None]
    return (logp * mask).sum(1)


def check_rows(tokens: torch.Tensor, lengths: torch.Tensor, max_len: int) -> None:
    assert tokens.shape[1] <= max_len and int(lengths.max()) == tokens.shape[1]
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        assert row[0] == EOS_INDEX and row[n - 1] == EOS_INDEX
        assert EOS_INDEX not in row[1 : n - 1]
        assert all(t == PAD_INDEX for t in row[n:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_equals_greedy(model, seed):
    src, src_len = source_batch(seed)
    greedy = greedy_decode(model, src, src_len, 0, 1, max_len=20)
    check_rows(*greedy, 20)
    assert len(set(greedy[1].tolist())) > 1  # some rows stopped early, some did not
    for lp, early in ((1.0, True), (0.0, False)):
        beam = beam_search(model, src, src_len, 0, 1, max_len=20, beam_size=1, length_penalty=lp, early_stopping=early)
        assert torch.equal(beam[0], greedy[0]) and torch.equal(beam[1], greedy[1])


@pytest.mark.parametrize("beam_size", [1, 3])
def test_cache_gives_the_same_output(model, beam_size):
    src, src_len = source_batch(3)
    cfg = DecodeConfig(beam_size=beam_size, length_penalty=1.0)
    with_cache = generate(model, src, src_len, 0, 1, cfg)
    without = generate(
        model, src, src_len, 0, 1, DecodeConfig(beam_size=beam_size, length_penalty=1.0, use_cache=False)
    )
    assert torch.equal(with_cache[0], without[0]) and torch.equal(with_cache[1], without[1])


def test_beam_search_finds_at_least_as_likely_outputs(model):
    src, src_len = source_batch(4)
    g_tok, g_len = greedy_decode(model, src, src_len, 0, 1, max_len=16)
    b_tok, b_len = beam_search(model, src, src_len, 0, 1, max_len=16, beam_size=4, length_penalty=0.0)
    check_rows(b_tok, b_len, 16)
    with torch.no_grad():
        g = sequence_logprob(model, src, src_len, g_tok, g_len)
        b = sequence_logprob(model, src, src_len, b_tok, b_len)
    assert bool((b >= g - 1e-4).all()) and bool((b > g + 1e-4).any())


def test_cached_decoding_cost_grows_linearly():
    model = tiny_model(5)
    with torch.no_grad():
        model.decoder.pred_bias[EOS_INDEX] = -1e4  # never stops: runs to max_len
    src, src_len = source_batch(5, bs=1)
    fed = []
    hook = model.decoder.embeddings.register_forward_hook(lambda m, i, o: fed.append(i[0].shape[1]))
    try:
        for use_cache in (True, False):
            fed.clear()
            greedy_decode(model, src, src_len, 0, 1, max_len=30, use_cache=use_cache)
            total = sum(fed)
            if use_cache:
                assert fed == [1] * 29 and total == 29  # one position per step
            else:
                assert total == sum(range(1, 30))  # the whole prefix every step
    finally:
        hook.remove()


def test_translate_rows_keeps_input_order(model):
    src, src_len = source_batch(6, bs=7)
    rows = [src[i, : int(n)].numpy() for i, n in enumerate(src_len)]
    cfg = DecodeConfig()
    out = translate_rows(model, rows, 0, 1, cfg, "cpu", max_tokens=30)  # several batches, sorted by length
    for i, r in enumerate(rows):
        tok, n = generate(model, torch.from_numpy(r)[None], torch.tensor([len(r)]), 0, 1, cfg)
        assert out[i] == tok[0, 1 : int(n[0]) - 1].tolist()
    assert translate_rows(model, [], 0, 1, cfg, "cpu") == []
    assert isinstance(out[0], list) and all(isinstance(w, int) for w in out[0])
