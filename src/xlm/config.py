"""Typed configuration: pydantic models stored as TOML, overridable from the command line.

Every config class derives from :class:`Config`, which forbids unknown keys, so a typo
in a TOML file or an override is an error that names the field. Numeric fields carry their
allowed range (the annotated types below); a value outside it is an error naming the field,
the value and the range. NaN and infinities are refused everywhere.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, TypeVar

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xlm.errors import XLMError

C = TypeVar("C", bound="Config")


class ConfigError(XLMError):
    """A configuration that cannot be used; the message names the file and field."""


# Allowed ranges of numeric fields.
Count = Annotated[int, Field(ge=1)]  # sizes, steps, batch sizes: at least 1
NonNegativeInt = Annotated[int, Field(ge=0)]  # where 0 means "off" or "automatic"
Positive = Annotated[float, Field(gt=0)]  # learning rates, temperatures, epsilons
NonNegative = Annotated[float, Field(ge=0)]  # weights, exponents, budgets (0: off)
Probability = Annotated[float, Field(ge=0, le=1)]
Rate = Annotated[float, Field(ge=0, lt=1)]  # dropout and the like: 1 would drop everything


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


class Settings(Config):
    """Settings made in code rather than read from a TOML file (decoding, noise, masking,
    sentence vectors): typed and validated like the configs (a bad value is a ``ValueError``
    naming the field), frozen, built by keyword."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _bounds(cls: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The allowed range of the field at ``loc`` in ``cls`` (``"[0, 1)"``), or ``""``."""
    model: Any = cls
    field = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            return ""
        field = fields[part]
        model = field.annotation
    if field is None:
        return ""
    lo = hi = None
    lo_open = hi_open = False
    for m in field.metadata:  # pydantic keeps Field(ge=..., lt=...) as one object per bound
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        elif getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        elif getattr(m, "le", None) is not None:
            hi = m.le
        elif getattr(m, "lt", None) is not None:
            hi, hi_open = m.lt, True
    if lo is None and hi is None:
        return ""
    left = "-inf" if lo is None else f"{lo:g}"
    right = "inf" if hi is None else f"{hi:g}"
    return f"{'(' if lo is None or lo_open else '['}{left}, {right}{')' if hi is None or hi_open else ']'}"


def _format_validation_error(
    err: ValidationError,
    source: str,
    cls: type[BaseModel] | None = None,
    overridden: frozenset[str] = frozenset(),
) -> str:
    """One line per bad field; a field set by a command-line override says so, since the
    file named in the header is not where the mistake is."""
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        if field in overridden:
            field += " (command-line override)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"):
            allowed = _bounds(cls, e["loc"]) if cls is not None else ""
            msg = f"must be within {allowed}" if allowed else "must be a finite number"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        got = e.get("input")
        lines.append(f"  {field}: {msg}" if isinstance(got, dict) else f"  {field}: {msg} (got {got!r})")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as TOML when it parses, else as a string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.max_steps=100)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def resume_and_overrides(resume: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """``--resume key=value``: argparse gives the override to ``--resume`` (it takes an optional
    checkpoint path); give it back to the overrides and resume from the latest checkpoint."""
    if resume is not None and re.match(r"^[A-Za-z_][\w.]*=", resume):
        return "latest", [resume, *overrides]
    return resume, overrides


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_config_data(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The settings given by a TOML file (optional) and ``key=value`` overrides, not validated."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return apply_overrides(data, overrides or [])


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Read a TOML file (optional), apply ``key=value`` overrides and validate into ``cls``."""
    source = str(path) if path is not None else "command-line overrides"
    # with a file named in the header, say which bad fields came from the command line instead
    overridden = frozenset(".".join(parse_override(o)[0]) for o in overrides or []) if path is not None else frozenset()
    return validate_config(cls, read_config_data(path, overrides), source, overridden)


def validate_config(
    cls: type[C], data: dict[str, Any], source: str = "config", overridden: frozenset[str] = frozenset()
) -> C:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source, cls, overridden)) from None


def to_toml(config: Config) -> str:
    return tomli_w.dumps(json.loads(config.model_dump_json(exclude_none=True)))
