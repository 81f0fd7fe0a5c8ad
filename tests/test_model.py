import torch

from xlm.model.transformer import KVCache, ModelConfig, TransformerModel


def tiny(**kw) -> TransformerModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, n_langs=2, emb_dim=32, n_layers=2, n_heads=4, max_positions=64, **kw)
    return TransformerModel(cfg).eval()


def test_causal_attention_ignores_the_future():
    m = tiny()
    x = torch.randint(14, 50, (2, 10))
    y = x.clone()
    y[:, 6:] = torch.randint(14, 50, (2, 4))
    h1, h2 = m(x, causal=True), m(y, causal=True)
    assert torch.allclose(h1[:, :6], h2[:, :6], atol=1e-6)
    assert not torch.allclose(h1[:, 6:], h2[:, 6:])
    # bidirectional attention does look ahead
    assert not torch.allclose(m(x)[:, :6], m(y)[:, :6])


def test_padding_does_not_change_real_positions_and_is_zeroed():
    m = tiny()
    x = torch.randint(14, 50, (1, 7))
    padded = torch.cat([x, torch.full((1, 3), 2)], dim=1)
    h_alone = m(x, lengths=torch.tensor([7]))
    h_pad = m(padded, lengths=torch.tensor([7]))
    assert torch.allclose(h_alone, h_pad[:, :7], atol=1e-5)
    assert h_pad[:, 7:].abs().max() == 0


def test_language_embeddings_matter_and_can_be_switched_off():
    m = tiny()
    x = torch.randint(14, 50, (1, 5))
    assert not torch.allclose(m(x, langs=torch.tensor([0])), m(x, langs=torch.tensor([1])))
    off = tiny(use_lang_emb=False)
    assert off.lang_embeddings is None
    assert torch.allclose(off(x, langs=torch.tensor([0])), off(x, langs=torch.tensor([1])))


def test_output_layer_is_tied_and_predict_selects_positions():
    m = tiny()
    x = torch.randint(14, 50, (2, 6))
    sel = torch.zeros(2, 6, dtype=torch.bool)
    sel[0, 2] = sel[1, 4] = True
    logits = m(x, predict=sel)
    h = m(x)
    assert logits.shape == (2, 50)
    assert torch.allclose(logits[1], h[1, 4] @ m.embeddings.weight.T + m.pred_bias, atol=1e-5)
    names = [n for n, _ in m.named_parameters()]
    assert not any("proj" in n for n in names)  # no untied output matrix


def test_decoder_cache_matches_full_forward():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, n_langs=2, emb_dim=32, n_layers=2, n_heads=4, max_positions=64)
    dec = TransformerModel(cfg, is_decoder=True).eval()
    memory = torch.randn(2, 5, 32)
    mem_len = torch.tensor([5, 3])
    y = torch.randint(14, 50, (2, 8))
    full = dec(y, causal=True, memory=memory, memory_lengths=mem_len)
    cache = KVCache()
    steps = [dec(y[:, t : t + 1], causal=True, memory=memory, memory_lengths=mem_len, cache=cache) for t in range(8)]
    assert torch.allclose(full, torch.cat(steps, dim=1), atol=1e-5)


def test_sinusoidal_positions_are_fixed():
    m = tiny(sinusoidal_embeddings=True)
    assert not m.position_embeddings.weight.requires_grad
    assert torch.allclose(m.position_embeddings.weight[0, 1::2], torch.ones(16))


def test_padded_batch_runs_packed_and_equals_each_row_alone_in_values_and_gradients():
    torch.manual_seed(1)
    for is_decoder, causal in ((False, False), (False, True), (True, True)):
        cfg = ModelConfig(
            vocab_size=50,
            n_langs=2,
            emb_dim=32,
            n_layers=2,
            n_heads=4,
            max_positions=64,
            dropout=0.0,
            attention_dropout=0.0,
        )
        m = TransformerModel(cfg, is_decoder=is_decoder).train()
        lengths = torch.tensor([9, 4, 7, 1])
        tokens = torch.randint(14, 50, (4, 9))
        tokens[torch.arange(9)[None, :] >= lengths[:, None]] = 2
        kw = {"causal": causal}
        if is_decoder:
            kw.update(memory=torch.randn(4, 6, 32), memory_lengths=torch.tensor([6, 6, 6, 6]))
        h = m(tokens, lengths=lengths, **kw)
        assert h[torch.arange(9)[None, :] >= lengths[:, None]].abs().max() == 0  # padding stays zero
        h.pow(2).sum().backward()
        grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
        m.zero_grad()
        ref = []
        for i, n in enumerate(lengths.tolist()):
            rkw = dict(kw)
            if is_decoder:
                rkw.update(memory=kw["memory"][i : i + 1], memory_lengths=kw["memory_lengths"][i : i + 1])
            ref.append(m(tokens[i : i + 1, :n], lengths=torch.tensor([n]), **rkw)[0])
        sum(r.pow(2).sum() for r in ref).backward()
        for i, n in enumerate(lengths.tolist()):
            assert torch.allclose(h[i, :n], ref[i], atol=1e-5)
        for k, g in grads.items():
            assert torch.allclose(g, m.get_parameter(k).grad, atol=1e-4), k


def test_hidden_states_of_several_layers_match_the_output_and_zero_padding():
    m = tiny()
    tokens = torch.randint(14, 50, (2, 6))
    lengths = torch.tensor([6, 3])
    states = m.hidden_states(tokens, lengths, layers=[0, 1, 2])
    assert len(states) == 3 and all(s.shape == (2, 6, 32) for s in states)
    assert torch.equal(states[-1], m(tokens, lengths))
    assert all(s[1, 3:].abs().max() == 0 for s in states)


def test_inference_autocast_runs_bf16_and_warns_where_bf16_is_emulated(monkeypatch):
    import pytest

    from xlm.model import precision

    x = torch.randn(4, 8)
    with precision.inference_autocast(torch.device("cpu"), "fp32"):
        assert (x @ x.T).dtype == torch.float32
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        with precision.inference_autocast(torch.device("cpu"), "bf16"):
            assert (x @ x.T).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="not one of"):
        precision.inference_autocast(torch.device("cpu"), "fp8")


def test_dropout_drops_at_the_rate_keeps_the_mean_and_follows_the_seed():
    from xlm.model.transformer import dropout

    x = (torch.rand(1000, 1000) + 0.5).requires_grad_()  # no zeros of its own
    torch.manual_seed(3)
    y = dropout(x, 0.1, training=True)
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - 0.1) < 5 * (0.1 * 0.9 / 1e6) ** 0.5  # within 5 sigma of the rate
    kept = y != 0
    scale = 65536 / (65536 - round(0.1 * 65536))
    assert torch.allclose(y[kept], x[kept] * scale)  # survivors scaled by 1 / keep rate: same mean
    y.sum().backward()  # the gradient flows through the kept elements only, with the same scale
    assert torch.allclose(x.grad, kept.float() * scale)
    # the mask is uncorrelated along rows, columns and between neighbouring elements
    assert abs(kept.float().mean(0).std().item() - (0.09 / 1000) ** 0.5) < 0.003
    assert abs(torch.corrcoef(torch.stack([kept[:, :-1].flatten(), kept[:, 1:].flatten()]).float())[0, 1].item()) < 0.01
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.1, training=True), y)  # the global seed decides the mask
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x
    assert torch.count_nonzero(dropout(x, 1.0, training=True)) == 0
