"""Range validation of every numeric config field, as properties: a value is accepted exactly
when it lies in the field's declared range, and a refused value gets an error naming the field,
the value and the range. Every numeric field declares a range unless listed as free below."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from xlm.config import Config, ConfigError, validate_config
from xlm.tasks.classification import ClassifyConfig
from xlm.tasks.pretraining import PretrainConfig
from xlm.tasks.translation import MTConfig

ROOTS: list[type[Config]] = [PretrainConfig, MTConfig, ClassifyConfig]
# numeric fields any value of which is meaningful
FREE = {"finetune.layer", "eval.length_penalty"}


def _numeric_fields(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, type, Any]]:
    """(dotted path, int or float, field info) of every int / float field under ``cls``."""
    out = []
    for name, f in cls.model_fields.items():
        path = f"{prefix}{name}"
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _numeric_fields(ann, path + ".")
        elif ann in (int, float):
            out.append((path, ann, f))
    return out


FIELDS = [(root, path, kind, f) for root in ROOTS for path, kind, f in _numeric_fields(root)]


def _bounds(f) -> tuple[float, bool, float, bool]:
    lo, lo_open, hi, hi_open = -math.inf, True, math.inf, True
    for m in f.metadata:
        if getattr(m, "ge", None) is not None:
            lo, lo_open = m.ge, False
        elif getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        elif getattr(m, "le", None) is not None:
            hi, hi_open = m.le, False
        elif getattr(m, "lt", None) is not None:
            hi, hi_open = m.lt, True
    return lo, lo_open, hi, hi_open


def _inside(v: float, lo: float, lo_open: bool, hi: float, hi_open: bool) -> bool:
    if not math.isfinite(v):
        return False
    above = v > lo if lo_open else v >= lo
    below = v < hi if hi_open else v <= hi
    return above and below


def _nested(path: str, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    node = data
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return data


def test_every_numeric_field_declares_its_range():
    assert len(FIELDS) > 60
    unbounded = sorted(
        f"{root.__name__}: {path}" for root, path, _, f in FIELDS if _bounds(f) == (-math.inf, True, math.inf, True)
    )
    assert [u for u in unbounded if u.split(": ")[1] not in FREE] == []


def _values(kind: type, f) -> st.SearchStrategy:
    lo, _, hi, _ = _bounds(f)
    edges = [x for x in (lo, hi) if math.isfinite(x)]
    if kind is int:
        near = [int(e) + d for e in edges for d in (-1, 0, 1)]
        return st.sampled_from(near or [0]) | st.integers(-(10**9), 10**9)
    near = [e + d for e in edges for d in (-1e-9, 0.0, 1e-9, -1.0, 1.0)]
    return st.sampled_from(near or [0.0]) | st.floats(allow_nan=True, allow_infinity=True)


@pytest.mark.parametrize(("root", "path", "kind", "f"), FIELDS, ids=[f"{r.__name__}.{p}" for r, p, _, _ in FIELDS])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_value_is_accepted_exactly_when_in_range(root, path, kind, f, data):
    value = data.draw(_values(kind, f))
    lo, lo_open, hi, hi_open = _bounds(f)
    try:
        validate_config(root, _nested(path, value))
        refused = ""
    except ConfigError as e:
        refused = str(e)
    own = f"  {path}: must be"  # the field's own range error (others, e.g. emb_dim % n_heads, may also fire)
    if _inside(float(value), lo, lo_open, hi, hi_open):
        assert own not in refused
    else:
        assert own in refused, refused
        line = next(line for line in refused.splitlines() if line.startswith(own))
        assert f"(got {value!r})" in line
        if math.isfinite(lo) or math.isfinite(hi):
            assert f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}" in line


@settings(max_examples=60, deadline=None)
@given(emb=st.integers(1, 512), heads=st.integers(1, 16))
def test_emb_dim_must_be_divisible_by_n_heads(emb, heads):
    data = {"model": {"emb_dim": emb, "n_heads": heads}}
    if emb % heads == 0:
        validate_config(PretrainConfig, data)
    else:
        with pytest.raises(ConfigError, match=rf"model: emb_dim={emb} must be divisible by n_heads={heads}"):
            validate_config(PretrainConfig, data)


@settings(max_examples=60, deadline=None)
@given(p=st.tuples(*[st.floats(-0.5, 1.5, allow_nan=False)] * 3))
def test_mask_probs_are_probabilities_summing_to_one(p):
    data = {"objectives": {"mask_probs": list(p)}}
    ok = all(0 <= x <= 1 for x in p) and abs(sum(p) - 1) <= 1e-6
    if ok:
        validate_config(PretrainConfig, data)
    else:
        with pytest.raises(ConfigError, match=r"objectives(\.mask_probs)?"):
            validate_config(PretrainConfig, data)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_strings_accepted(device):
    assert validate_config(PretrainConfig, {"train": {"device": device}}).train.device == device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:a", "", "cpu ", "tpu"])
def test_device_typos_refused_naming_the_allowed_values(device):
    with pytest.raises(ConfigError, match=r"train\.device: unknown device .*use auto, cpu, cuda, cuda:N or mps"):
        validate_config(PretrainConfig, {"train": {"device": device}})
