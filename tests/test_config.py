import pytest

from xlm.config import Config, ConfigError, load_config


class Inner(Config):
    lr: float = 1e-3
    steps: int = 10


class Outer(Config):
    name: str = "x"
    train: Inner = Inner()


def test_toml_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('name = "run"\n[train]\nlr = 0.5\n')
    cfg = load_config(Outer, p, ["train.steps=7", "name=other"])
    assert cfg.name == "other" and cfg.train.lr == 0.5 and cfg.train.steps == 7


def test_unknown_field_is_named(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nlrr = 0.5\n")
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown field"):
        load_config(Outer, p)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train\.steps"):
        load_config(Outer, None, ["train.steps=abc"])
