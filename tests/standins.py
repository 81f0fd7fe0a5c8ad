"""Stand-ins for released XLM-R and mBERT checkpoints, built here (no network): small random
models in exactly the layouts they are released in, with vocabularies trained on real text.

- ``transformers``: ``XLMRobertaForMaskedLM`` / ``BertForMaskedLM`` saved by ``save_pretrained``
  beside ``sentencepiece.bpe.model`` / ``vocab.txt`` and the tokenizer's own files.
- fairseq (the form XLM-R was first released in): ``model.pt`` (``torch.save`` of ``model``,
  the state dict under fairseq's names with the ``decoder.`` prefix of that release, and
  ``args``, an ``argparse.Namespace``), ``dict.txt`` and ``sentencepiece.bpe.model``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

FAIRSEQ_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def train_sentencepiece(path: Path, sentences: list[str], vocab_size: int = 200) -> Path:
    """A SentencePiece BPE model with XLM-R's control pieces (``<unk>``=0, ``<s>``=1, ``</s>``=2)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )  # fmt: skip
    path.write_bytes(buf.getvalue())
    return path


def train_wordpiece(directory: Path, sentences: list[str], vocab_size: int = 300, lowercase: bool = False) -> Path:
    """BERT's ``vocab.txt`` (``[PAD] [UNK] [CLS] [SEP] [MASK]`` first) learned by ``tokenizers``."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase)
    tok.train_from_iterator(
        sentences, vocab_size=vocab_size, min_frequency=1, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(directory))
    return directory / "vocab.txt"


def hf_xlmr(directory: Path, spm_model: Path, seed: int = 0, layers: int = 2, masked_lm: bool = True):
    """A random ``XLMRobertaForMaskedLM`` (or bare ``XLMRobertaModel``) + ``XLMRobertaTokenizer``
    saved by ``save_pretrained`` into ``directory``."""
    import sentencepiece as spm
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaModel, XLMRobertaTokenizer

    n = spm.SentencePieceProcessor(model_file=str(spm_model)).get_piece_size() + 2
    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(
        vocab_size=n, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=258, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    model = (XLMRobertaForMaskedLM if masked_lm else XLMRobertaModel)(cfg).eval()
    randomize(model, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    (directory / "sentencepiece.bpe.model").write_bytes(spm_model.read_bytes())
    XLMRobertaTokenizer.from_pretrained(directory).save_pretrained(directory)
    return model


def hf_bert(directory: Path, vocab_txt: Path, seed: int = 0, layers: int = 2, lowercase: bool = False):
    """A random ``BertForMaskedLM`` + ``BertTokenizer`` saved by ``save_pretrained``."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    n = len(vocab_txt.read_text(encoding="utf-8").splitlines())
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=n, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=256, pad_token_id=0,
    )  # fmt: skip
    model = BertForMaskedLM(cfg).eval()
    randomize(model, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    BertTokenizer(str(vocab_txt), do_lower_case=lowercase).save_pretrained(directory)
    (directory / "vocab.txt").write_bytes(vocab_txt.read_bytes())  # released BERT directories carry it
    return model


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Move every weight away from its initial value (LayerNorms and biases included), so
    that a weight left behind in a conversion changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def fairseq_xlmr(directory: Path, hf_model, spm_model: Path, prefix: str = "decoder.") -> Path:
    """fairseq's XLM-R layout of the weights of an ``XLMRobertaForMaskedLM``: ``model.pt`` with
    fairseq's parameter names (no token-type embedding: the model must have a zero one),
    ``args`` as a Namespace, ``dict.txt`` and ``sentencepiece.bpe.model``."""
    import sentencepiece as spm

    sd = hf_model.state_dict()
    enc, body = f"{prefix}sentence_encoder.", "roberta."
    out = {
        f"{enc}embed_tokens.weight": sd[f"{body}embeddings.word_embeddings.weight"],
        f"{enc}embed_positions.weight": sd[f"{body}embeddings.position_embeddings.weight"],
        f"{enc}emb_layer_norm.weight": sd[f"{body}embeddings.LayerNorm.weight"],
        f"{enc}emb_layer_norm.bias": sd[f"{body}embeddings.LayerNorm.bias"],
        f"{prefix}lm_head.dense.weight": sd["lm_head.dense.weight"],
        f"{prefix}lm_head.dense.bias": sd["lm_head.dense.bias"],
        f"{prefix}lm_head.layer_norm.weight": sd["lm_head.layer_norm.weight"],
        f"{prefix}lm_head.layer_norm.bias": sd["lm_head.layer_norm.bias"],
        f"{prefix}lm_head.weight": sd[f"{body}embeddings.word_embeddings.weight"],
        f"{prefix}lm_head.bias": sd["lm_head.bias"],
        f"{enc}version": torch.tensor([2.0]),
    }
    names = {
        "attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
        "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
        "attention.output.LayerNorm": "self_attn_layer_norm", "intermediate.dense": "fc1",
        "output.dense": "fc2", "output.LayerNorm": "final_layer_norm",
    }  # fmt: skip
    for i in range(hf_model.config.num_hidden_layers):
        for theirs, fs in names.items():
            for kind in ("weight", "bias"):
                out[f"{enc}layers.{i}.{fs}.{kind}"] = sd[f"{body}encoder.layer.{i}.{theirs}.{kind}"]
    c = hf_model.config
    args = argparse.Namespace(
        arch="roberta_base", task="masked_lm", encoder_layers=c.num_hidden_layers, encoder_embed_dim=c.hidden_size,
        encoder_ffn_embed_dim=c.intermediate_size, encoder_attention_heads=c.num_attention_heads,
        activation_fn="gelu", dropout=0.1, attention_dropout=0.1, max_positions=c.max_position_embeddings - 2,
        encoder_normalize_before=False, bpe="sentencepiece", sample_break_mode="complete",
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": {k: v.clone() for k, v in out.items()}, "args": args, "optimizer_history": []}, directory / "model.pt"
    )
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    pieces = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    (directory / "dict.txt").write_text("".join(f"{p} {1000 - k}\n" for k, p in enumerate(pieces)), encoding="utf-8")
    (directory / "sentencepiece.bpe.model").write_bytes(spm_model.read_bytes())
    return directory
