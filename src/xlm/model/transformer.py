"""The XLM Transformer: word + learned position + language embeddings, embedding LayerNorm,
post-LN blocks (attention, GELU feed-forward of 4 x dim), dropout and attention dropout,
hidden states zeroed at padding, and an output layer tied to the word embeddings with its
own bias. A decoder adds cross-attention to an encoder's states and a key/value cache.

``ModelConfig.arch`` picks the network around the same blocks:

- ``xlm``: the above (LayerNorm eps 1e-12).
- ``xlmr``: RoBERTa's, as XLM-R uses it: no language embeddings, learned positions offset
  past the padding index (position of token ``i`` is ``pad_index + 1 + i``, as
  ``create_position_ids_from_input_ids`` gives for right-padded rows), one token-type
  embedding added to every token, LayerNorm eps 1e-5, and the LM head transform (dense +
  GELU + LayerNorm) before the tied output projection.
- ``bert``: BERT's: absolute positions, two token types (type 0 is used), eps 1e-12, the same
  LM head transform.

Tensors are batch-first: tokens ``(B, T)``, hidden states ``(B, T, D)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn

from xlm.config import Config, Count, NonNegativeInt, Rate
from xlm.text.vocab import PAD_INDEX


class ModelConfig(Config):
    """Sizes and options of one Transformer (encoder or decoder)."""

    vocab_size: NonNegativeInt = 0  # filled in from the vocabulary when 0
    n_langs: Count = 1
    emb_dim: Count = 256
    n_layers: Count = 4
    n_heads: Count = 4
    ffn_dim: NonNegativeInt = 0  # 0 means 4 x emb_dim
    dropout: Rate = 0.1
    attention_dropout: Rate = 0.1
    max_positions: Count = 512
    sinusoidal_embeddings: bool = False
    use_lang_emb: bool = True
    pad_index: NonNegativeInt = PAD_INDEX
    arch: Literal["xlm", "xlmr", "bert"] = "xlm"

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        """XLM-R and BERT have no language embeddings and learned positions: their
        ``use_lang_emb`` defaults to false, and asking for either is an error naming the field."""
        if not isinstance(data, dict) or data.get("arch", "xlm") == "xlm":
            return data
        arch = data["arch"]
        if data.get("use_lang_emb") and int(data.get("n_langs", 1)) > 1:
            raise ValueError(f"use_lang_emb: the {arch} network has no language embeddings (set use_lang_emb = false)")
        if data.get("sinusoidal_embeddings"):
            raise ValueError(f"sinusoidal_embeddings: the {arch} network learns its positions")
        return {**data, "use_lang_emb": False}

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ModelConfig:
        if self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim={self.emb_dim} must be divisible by n_heads={self.n_heads}")
        if self.sinusoidal_embeddings and self.emb_dim % 2:
            raise ValueError(f"emb_dim={self.emb_dim} must be even with sinusoidal_embeddings")
        return self

    def ffn_size(self) -> int:
        return self.ffn_dim or 4 * self.emb_dim

    def norm_eps(self) -> float:
        """LayerNorm epsilon: RoBERTa's 1e-5 for ``xlmr``, 1e-12 (XLM's and BERT's) otherwise."""
        return 1e-5 if self.arch == "xlmr" else 1e-12

    def n_token_types(self) -> int:
        """Rows of the token-type embedding (0: none)."""
        return {"xlm": 0, "xlmr": 1, "bert": 2}[self.arch]

    def position_offset(self) -> int:
        """First position id of a sequence: RoBERTa's start past the padding index."""
        return self.pad_index + 1 if self.arch == "xlmr" else 0

    def position_rows(self) -> int:
        """Rows of the position embedding: ``max_positions`` (the longest sequence) plus, for
        ``xlmr``, the ids below its offset (RoBERTa's 512 positions are a table of 514 rows)."""
        return self.max_positions + self.position_offset()


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, -2.0 * torch.div(torch.arange(dim), 2, rounding_mode="floor") / dim)
    angles = pos * freq[None, :]
    table = torch.empty(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout``, faster on CPU. There torch draws a dropout mask one element at a time
    from a serial generator (~12 ns per element, 14% of a demo training step); here one 64-bit
    draw gives the mask of four elements (16 random bits each: drop when below
    ``round(p * 65536)``, so the rate is ``p`` to within 8e-6, and the kept values are scaled by
    the exact inverse of their keep rate). Same generator, so seeding and resume are unchanged.
    Elsewhere (CUDA's fused kernel is fast) it is ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    n, drop = x.numel(), round(p * 65536)
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
    keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # 1.0 / 0.0, written by the comparison
    torch.ge(bits.view(x.shape), drop - 32768, out=keep)  # int16 values are uniform over [-32768, 32767]
    return torch.mul(x, keep).mul_(65536 / (65536 - drop))  # in place on the fresh product


class Packing:
    """Where the real tokens of a padded ``(B, T)`` batch lie, so that every per-token
    layer (projections, feed-forward, LayerNorm, residuals) runs on the ``N`` real tokens
    only (``(N, C)`` rows) and only attention sees the padded ``(B, T)`` layout. Padding is
    then free except inside attention: a batch with 25% padding does ~25% fewer FLOPs."""

    def __init__(self, mask: Tensor):
        self.bs, self.slen = mask.shape
        self.index = mask.reshape(-1).nonzero().squeeze(1)  # flat positions of real tokens
        self.rows = torch.div(self.index, self.slen, rounding_mode="floor")
        self.cols = self.index - self.rows * self.slen

    def pack(self, x: Tensor) -> Tensor:
        """``(B, T, C)`` -> ``(N, C)``: the real tokens, row-major."""
        return x.reshape(self.bs * self.slen, -1).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """``(N, C)`` -> ``(B, T, C)``, zeros at padding."""
        out = x.new_zeros(self.bs * self.slen, x.shape[-1])
        return out.index_copy(0, self.index, x).view(self.bs, self.slen, -1)

    def pack_heads(self, x: Tensor) -> Tensor:
        """Attention output ``(B, H, T, Dh)`` -> ``(N, H * Dh)`` in one gather."""
        return x[self.rows, :, self.cols].reshape(len(self.index), -1)


@dataclass
class KVCache:
    """Keys and values of the tokens decoded so far, per layer, plus the cross-attention
    keys/values of the encoder output (computed once). ``length`` counts decoded positions."""

    length: int = 0
    self_kv: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    cross_kv: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def reorder(self, index: Tensor, cross: bool = True) -> None:
        """Keep the batch rows ``index`` (beam search): the cached tensors are re-indexed.
        ``cross=False`` leaves the cross-attention keys/values as they are, which is right when
        every row of ``index`` reads the same encoder output as the row it replaces (the beams
        of one sentence)."""
        for store in (self.self_kv, self.cross_kv) if cross else (self.self_kv,):
            for k, (a, b) in store.items():
                store[k] = (a.index_select(0, index), b.index_select(0, index))


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    causal: bool,
    dropout_p: float,
    out: nn.Module,
    packing: Packing | None,
) -> Tensor:
    """Scaled dot-product attention over ``(B, H, T, Dh)`` heads, the heads merged (into the
    packed ``(N, H * Dh)`` layout with ``packing``, else ``(B, T, H * Dh)``) and projected by
    ``out``."""
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)
    if packing is not None:
        return out(packing.pack_heads(heads))
    bs, h, qlen, dh = heads.shape
    return out(heads.transpose(1, 2).reshape(bs, qlen, h * dh))


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"emb_dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        causal: bool,
        cache: KVCache | None = None,
        layer: int = 0,
        packing: Packing | None = None,
    ) -> Tensor:
        """``x`` is ``(B, T, D)``, or ``(N, D)`` real tokens when ``packing`` is given (the
        output then has the same packed layout)."""
        qkv = self.qkv(x)
        if packing is not None:
            qkv = packing.unpack(qkv)
        bs, qlen, dim3 = qkv.shape
        dim, h = dim3 // 3, self.n_heads
        q, k, v = qkv.view(bs, qlen, 3, h, dim // h).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            if layer in cache.self_kv:
                k_prev, v_prev = cache.self_kv[layer]
                k, v = torch.cat([k_prev, k], dim=2), torch.cat([v_prev, v], dim=2)
            cache.self_kv[layer] = (k, v)
            klen = k.shape[2]
            if causal and qlen > 1:
                # new queries see every cached key and the new keys up to themselves
                offset = klen - qlen
                allowed = torch.ones(qlen, klen, dtype=torch.bool, device=x.device).tril(offset)
                attn_mask = allowed if attn_mask is None else attn_mask & allowed
            causal = False
        p = self.dropout if self.training else 0.0
        return attend(q, k, v, attn_mask, causal and attn_mask is None, p, self.out, packing)


class CrossAttention(nn.Module):
    """Multi-head attention from decoder states to encoder states."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
        packing: Packing | None = None,
    ) -> Tensor:
        q = self.q(x)
        if packing is not None:
            q = packing.unpack(q)
        bs, qlen, dim = q.shape
        h = self.n_heads
        q = q.view(bs, qlen, h, dim // h).transpose(1, 2)
        if cache is not None and layer in cache.cross_kv:
            k, v = cache.cross_kv[layer]
        else:
            k, v = self.kv(memory).view(bs, memory.shape[1], 2, h, dim // h).permute(2, 0, 3, 1, 4).unbind(0)
            if cache is not None:
                cache.cross_kv[layer] = (k, v)
        p = self.dropout if self.training else 0.0
        return attend(q, k, v, memory_mask, False, p, self.out, packing)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        return dropout(self.lin2(F.gelu(self.lin1(x))), self.dropout, self.training)


class TransformerLayer(nn.Module):
    """Post-LN block: x = LN(x + attn(x)) [; x = LN(x + cross(x, memory))]; x = LN(x + ffn(x))."""

    def __init__(self, cfg: ModelConfig, is_decoder: bool):
        super().__init__()
        d = cfg.emb_dim
        self.dropout = cfg.dropout
        eps = cfg.norm_eps()
        self.attn = SelfAttention(d, cfg.n_heads, cfg.attention_dropout)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.cross_attn = CrossAttention(d, cfg.n_heads, cfg.attention_dropout) if is_decoder else None
        self.norm_cross = nn.LayerNorm(d, eps=eps) if is_decoder else None
        self.ffn = FeedForward(d, cfg.ffn_size(), cfg.dropout)
        self.norm2 = nn.LayerNorm(d, eps=eps)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        causal: bool,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        packing: Packing | None = None,
    ) -> Tensor:
        a = self.attn(x, attn_mask, causal, cache, layer, packing)
        x = self.norm1(x + dropout(a, self.dropout, self.training))
        if self.cross_attn is not None and self.norm_cross is not None and memory is not None:  # a decoder
            c = self.cross_attn(x, memory, memory_mask, cache, layer, packing)
            x = self.norm_cross(x + dropout(c, self.dropout, self.training))
        return self.norm2(x + self.ffn(x))


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``(B, T)`` boolean mask, True at real tokens (padding is at the end of each row)."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


POOLINGS: tuple[str, ...] = ("first", "mean")


def model_config(model: nn.Module) -> ModelConfig:
    """The config of a :class:`TransformerModel` (also inside a DistributedDataParallel wrapper)."""
    cfg = getattr(model, "module", model).cfg
    assert isinstance(cfg, ModelConfig)
    return cfg


def pool_states(states: Tensor, lengths: Tensor, pooling: str) -> Tensor:
    """``(B, T, D)`` states -> ``(B, D)``: the first token's state, or the mean over real tokens."""
    if pooling == "first":
        return states[:, 0]
    if pooling == "mean":
        mask = length_mask(lengths, states.shape[1]).to(states.dtype)[:, :, None]
        return (states * mask).sum(1) / lengths[:, None].to(states.dtype)
    raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")


class LMHeadTransform(nn.Module):
    """RoBERTa's / BERT's transform of hidden states before the tied output projection."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.gelu(self.dense(x)))


class TransformerModel(nn.Module):
    """The XLM network (or XLM-R's / BERT's, see ``ModelConfig.arch``). ``forward`` returns
    hidden states; ``predict`` maps chosen hidden states to vocabulary logits (so that MLM
    computes the output layer only where needed)."""

    def __init__(self, cfg: ModelConfig, is_decoder: bool = False):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set")
        self.cfg = cfg
        self.is_decoder = is_decoder
        d = cfg.emb_dim
        self.embeddings = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.pad_index)
        self.position_embeddings = nn.Embedding(cfg.position_rows(), d)
        if cfg.sinusoidal_embeddings:
            self.position_embeddings.weight.data.copy_(sinusoidal_table(cfg.max_positions, d))
            self.position_embeddings.weight.requires_grad_(False)
        self.lang_embeddings = nn.Embedding(cfg.n_langs, d) if cfg.use_lang_emb and cfg.n_langs > 1 else None
        n_types = cfg.n_token_types()
        self.token_type_embeddings = nn.Embedding(n_types, d) if n_types else None
        self.norm_emb = nn.LayerNorm(d, eps=cfg.norm_eps())
        self.layers = nn.ModuleList(TransformerLayer(cfg, is_decoder) for _ in range(cfg.n_layers))
        self.head = LMHeadTransform(d, cfg.norm_eps()) if cfg.arch != "xlm" else None
        self.pred_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        d = self.cfg.emb_dim
        if self.cfg.arch != "xlm":
            self._reset_bert_style()
            return
        nn.init.normal_(self.embeddings.weight, mean=0.0, std=d**-0.5)
        nn.init.constant_(self.embeddings.weight[self.cfg.pad_index], 0.0)
        if not self.cfg.sinusoidal_embeddings:
            nn.init.normal_(self.position_embeddings.weight, mean=0.0, std=d**-0.5)
        if self.lang_embeddings is not None:
            nn.init.normal_(self.lang_embeddings.weight, mean=0.0, std=d**-0.5)

    def _reset_bert_style(self) -> None:
        """BERT's / RoBERTa's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear):
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.embeddings.weight[self.cfg.pad_index], 0.0)

    def embed(self, tokens: Tensor, positions: Tensor | None, langs: Tensor | None, start: int = 0) -> Tensor:
        bs, slen = tokens.shape
        offset = self.cfg.position_offset()
        if positions is None:
            if start + slen > self.cfg.max_positions:
                raise ValueError(f"sequence of {start + slen} tokens exceeds max_positions={self.cfg.max_positions}")
            positions = torch.arange(start + offset, start + offset + slen, device=tokens.device)[None, :]
        elif offset:
            positions = positions + offset
        x = self.embeddings(tokens) + self.position_embeddings(positions)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]
        if langs is not None and self.lang_embeddings is not None:
            lang_emb = self.lang_embeddings(langs)
            x = x + (lang_emb[:, None, :] if langs.dim() == 1 else lang_emb)
        return dropout(self.norm_emb(x), self.cfg.dropout, self.training)

    def forward(
        self,
        tokens: Tensor,
        lengths: Tensor | None = None,
        langs: Tensor | None = None,
        positions: Tensor | None = None,
        causal: bool = False,
        memory: Tensor | None = None,
        memory_lengths: Tensor | None = None,
        cache: KVCache | None = None,
        predict: Tensor | None = None,
        layer: int | Sequence[int] | None = None,
    ) -> Tensor | list[Tensor]:
        """Hidden states ``(B, T, D)`` (zero at padding), or, when ``predict`` (a ``(B, T)``
        boolean mask) is given, vocabulary logits ``(N, V)`` at those positions only (the MLM
        trick: the output layer costs nothing where nothing is predicted). Computing the
        logits inside ``forward`` keeps DistributedDataParallel's gradient hooks in charge of
        every weight. ``langs`` is ``(B,)`` or ``(B, T)``; ``positions`` ``(B, T)`` overrides
        ``0..T-1`` (TLM restarts them on the target side). With a ``cache``, ``tokens`` are
        only the new positions and earlier keys/values are reused. ``layer`` returns the states
        after that block instead of the last (0 = embeddings, negative counts from the end;
        the blocks above it are not run); a list of layers returns their states in that order."""
        if layer is not None:
            n = len(self.layers)
            wanted = [layer] if isinstance(layer, int) else list(layer)
            resolved = [j + n + 1 if j < 0 else j for j in wanted]
            if not resolved or not all(0 <= j <= n for j in resolved):
                raise ValueError(f"layer {layer} does not exist: the model has layers 0 (embeddings) .. {n}")
            order = sorted(set(resolved))
            states = self.hidden_states(tokens, lengths, langs, positions, causal, memory, memory_lengths, cache, order)
            by_layer = dict(zip(order, states))
            return by_layer[resolved[0]] if isinstance(layer, int) else [by_layer[j] for j in resolved]
        x = self.hidden_states(tokens, lengths, langs, positions, causal, memory, memory_lengths, cache)[-1]
        if predict is not None:
            return self.predict(x[predict])
        return x

    def hidden_states(
        self,
        tokens: Tensor,
        lengths: Tensor | None = None,
        langs: Tensor | None = None,
        positions: Tensor | None = None,
        causal: bool = False,
        memory: Tensor | None = None,
        memory_lengths: Tensor | None = None,
        cache: KVCache | None = None,
        layers: Sequence[int] | None = None,
    ) -> list[Tensor]:
        """``(B, T, D)`` states after the given layers (0 = embeddings, ``n_layers`` = the
        output; default: only the output), zero at padding. A padded batch runs packed: every
        per-token operation sees the real tokens only (see ``Packing``)."""
        bs, slen = tokens.shape
        n = len(self.layers)
        wanted = set(layers) if layers is not None else {n}
        start = cache.length if cache is not None else 0
        packing = None
        attn_mask = None
        if lengths is not None and cache is None and bool((lengths < slen).any()):
            pad = length_mask(lengths, slen)
            packing = Packing(pad)
            # Padding is at the end of each row: causal attention never looks at it from a
            # real token, so the key mask is only needed for bidirectional attention.
            attn_mask = None if causal else pad[:, None, None, :]
        memory_mask = None
        if memory is not None and memory_lengths is not None and bool((memory_lengths < memory.shape[1]).any()):
            memory_mask = length_mask(memory_lengths, memory.shape[1])[:, None, None, :]
        x = self.embed(tokens, positions, langs, start)
        if packing is not None:
            x = packing.pack(x)
        out = []
        for i in range(max(wanted) + 1):
            if i > 0:
                x = self.layers[i - 1](x, attn_mask, causal, memory, memory_mask, cache, i - 1, packing)
            if i in wanted:
                out.append(packing.unpack(x) if packing is not None else x)
        if cache is not None:
            cache.length += slen
        return out

    def predict(self, hidden: Tensor) -> Tensor:
        """Vocabulary logits for hidden states of any leading shape (output tied to embeddings,
        after the LM head transform of XLM-R / BERT)."""
        if self.head is not None:
            hidden = self.head(hidden)
        return F.linear(hidden, self.embeddings.weight, self.pred_bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
