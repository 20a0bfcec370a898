from pathlib import Path

import pytest

from clipvis.config import Config, load_config, save_config
from clipvis.errors import InputError

PARAMS = Path(__file__).resolve().parents[1] / "params"


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config()
    assert isinstance(cfg, Config) and cfg.scale == "toy" and cfg.toy.frame_size == 192


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "name: base\ntoy:\n  seed: 1\n  frame_size: 64\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\ntoy:\n  seed: 2\n")
    cfg = load_config(child, ["toy.max_frames=20", "data.root=/x"])
    assert (cfg.name, cfg.toy.seed, cfg.toy.frame_size, cfg.toy.max_frames, cfg.data.root) == ("base", 2, 64, 20, "/x")
    assert isinstance(cfg.toy.novel_fraction, float)


def test_unknown_key_names_key_and_the_file_that_set_it(tmp_path):
    write(tmp_path / "base.yaml", "toy:\n  sede: 1\n")
    child = write(tmp_path / "child.yaml", "_base_: base.yaml\nname: x\n")
    with pytest.raises(InputError) as e:
        load_config(child)
    assert "toy.sede" in str(e.value) and "base.yaml" in str(e.value) and "unknown key" in str(e.value)


def test_wrong_type_and_bad_literal(tmp_path):
    path = write(tmp_path / "p.yaml", "toy:\n  frame_size: big\n")
    with pytest.raises(InputError, match=r"p.yaml: toy.frame_size: expected int"):
        load_config(path)
    with pytest.raises(InputError, match=r"--set: scale: must be one of"):
        load_config(None, ["scale=huge"])
    with pytest.raises(InputError, match=r"toy.colours\[1\]: expected str"):
        load_config(None, ["toy.colours=[red, 3]"])


def test_override_syntax_errors():
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        load_config(None, ["toy.seed"])
    with pytest.raises(InputError, match="toy.seed.x: seed is not a section"):
        load_config(None, ["toy.seed=1", "toy.seed.x=2"])


def test_circular_base(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(InputError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_malformed_yaml_names_the_file(tmp_path):
    path = write(tmp_path / "bad.yaml", "toy: [1, 2\n")
    with pytest.raises(InputError, match="bad.yaml.*malformed YAML"):
        load_config(path)


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["toy.seed=7", "name=run"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_missing_required_value_names_key_and_file():
    from dataclasses import dataclass

    from clipvis.config import from_dict

    @dataclass
    class Section:
        checkpoint: str
        depth: int = 6

    with pytest.raises(InputError, match=r"params/x.yaml: model.checkpoint: required value is missing"):
        from_dict(Section, {"depth": 3}, default_source="params/x.yaml", prefix="model.")


def test_the_defaults_are_the_toy_values():
    """Config() is the toy config that params/toy/default.yaml spells out in full."""
    assert load_config(PARAMS / "toy" / "default.yaml") == Config()


def test_the_paper_base_spells_every_key():
    """No paper value comes from a code default (those are the toy values): params/paper/base.yaml names every
    key of Config."""
    import yaml

    from clipvis.config import to_dict

    def keys(tree, prefix=""):
        return {f"{prefix}{key}" for key, value in tree.items() if not isinstance(value, dict)} | {
            name for key, value in tree.items() if isinstance(value, dict) for name in keys(value, f"{prefix}{key}.")}

    with open(PARAMS / "paper" / "base.yaml") as file:
        spelled = keys(yaml.safe_load(file))
    assert keys(to_dict(Config())) - spelled == set()
