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


def test_a_bad_override_is_blamed_on_the_command_line_not_the_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nlrr = 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p, ["train.stepz=3"])
    lines = str(e.value).splitlines()
    assert "train.lrr: unknown field" in lines[1] + lines[2]
    assert any("train.stepz (command-line override): unknown field" in line for line in lines)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train\.steps"):
        load_config(Outer, None, ["train.steps=abc"])


def test_settings_made_in_code_are_validated_like_configs():
    """Decoding, noise, masking and sentence-vector settings are frozen pydantic models: a bad
    value names its field, and they are built by keyword only."""
    import pydantic
    import pytest

    from xlm.evaluation.embeddings import EmbedOptions
    from xlm.model.generation import DecodeConfig
    from xlm.objectives.masking import MaskingConfig
    from xlm.objectives.translation import NoiseConfig

    for make, field in [
        (lambda: DecodeConfig(beam_size=0), "beam_size"),
        (lambda: NoiseConfig(word_dropout=1.0), "word_dropout"),
        (lambda: MaskingConfig(word_pred=0.0), "word_pred"),
        (lambda: MaskingConfig(mask_prob=0.5), "sum to 1"),
        (lambda: EmbedOptions(pooling="max"), "pooling"),
        (lambda: DecodeConfig(beam_sizes=2), "beam_sizes"),
    ]:
        with pytest.raises(ValueError, match=field):
            make()
    with pytest.raises(TypeError):
        DecodeConfig(2)  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        DecodeConfig().beam_size = 2  # type: ignore[misc]
