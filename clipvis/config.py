"""One typed configuration, loaded from `params/*.yaml` with `_base_` inheritance and `--set` overrides.

    cfg = load_config("params/toy/default.yaml", ["toy.seed=3"])
    save_config(cfg, "runs/x/config.yaml")

Unknown keys, wrong types and missing required values raise `InputError` naming the key and the
file (or `--set` for command-line overrides). A YAML file may start with `_base_: other.yaml`
(or a list of files, relative to it); its own values are merged over the bases, key by key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clipvis.errors import InputError
from clipvis.io import read_yaml, write_yaml

BASE_KEY = "_base_"


@dataclass
class ToyWorldConfig:
    """The generated toy world (`clipvis data --benchmark toy`)."""

    seed: int = 0
    colours: list[str] = field(default_factory=lambda: ["red", "green", "blue", "yellow", "purple", "orange"])
    shapes: list[str] = field(default_factory=lambda: ["circle", "square", "triangle", "star", "ring"])
    novel_fraction: float = 1 / 3
    frame_size: int = 128
    min_frames: int = 12
    max_frames: int = 36
    max_objects: int = 4
    train_images: int = 600
    train_videos: int = 40
    val_videos: int = 30
    ovis_videos: int = 20
    caption_images: int = 2000


@dataclass
class DataConfig:
    root: str = "data"


@dataclass
class Config:
    name: str = "toy"
    scale: Literal["toy", "paper"] = "toy"
    data: DataConfig = field(default_factory=DataConfig)
    toy: ToyWorldConfig = field(default_factory=ToyWorldConfig)


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Config from a YAML file (with its bases) and `key.sub=value` overrides."""
    raw, sources = _read_with_bases(Path(path), seen=()) if path else ({}, {})
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError("--set", item, "expected KEY=VALUE, e.g. toy.seed=3")
        _assign(raw, key.strip().split("."), yaml.safe_load(text) if text.strip() else "")
        sources[key.strip()] = "--set"
    return from_dict(Config, raw, default_source=str(path) if path else "--set", sources=sources)


def save_config(cfg: Config, path: str | Path) -> None:
    write_yaml(path, to_dict(cfg))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: Any, default_source: str = "<dict>", sources: dict[str, str] | None = None,
              prefix: str = "") -> Any:
    """Build dataclass `cls` from nested dicts, checking every key and type."""
    sources = sources or {}

    def source_of(key: str) -> str:
        return sources.get(key, default_source)

    if not isinstance(data, dict):
        raise InputError(source_of(prefix), prefix or "<top level>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full = f"{prefix}{key}"
            raise InputError(source_of(full), full, f"unknown key (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        full = f"{prefix}{name}"
        if name in data:
            values[name] = _coerce(hints[name], data[name], full, source_of, sources, default_source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(default_source, full, "required value is missing")
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str, source_of, sources, default_source) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, default_source, sources, prefix=f"{key}.")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise InputError(source_of(key), key, f"must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(arg, value, key, source_of, sources, default_source)
                except InputError:
                    continue
        raise InputError(source_of(key), key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise InputError(source_of(key), key, f"expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(item_type, v, f"{key}[{i}]", source_of, sources, default_source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(source_of(key), key, f"expected a mapping, got {value!r}")
        _, value_type = typing.get_args(tp)
        return {k: _coerce(value_type, v, f"{key}.{k}", source_of, sources, default_source) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise InputError(source_of(key), key, f"expected {tp.__name__}, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> tuple[dict, dict[str, str]]:
    """The merged raw mapping and, for every dotted key, the file that set it."""
    path = path.resolve()
    if path in seen:
        raise InputError(path, BASE_KEY, "circular inheritance")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise InputError(path, "<top level>", "expected a mapping of config keys")
    bases = raw.pop(BASE_KEY, [])
    merged: dict = {}
    sources: dict[str, str] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_raw, base_sources = _read_with_bases(path.parent / base, seen + (path,))
        merged = _merge(merged, base_raw)
        sources.update(base_sources)
    sources.update({key: str(path) for key in _leaf_keys(raw)})
    return _merge(merged, raw), sources


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _assign(raw: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        raw = raw.setdefault(key, {})
        if not isinstance(raw, dict):
            raise InputError("--set", ".".join(keys), f"{key} is not a section")
    raw[keys[-1]] = value


def _leaf_keys(raw: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in raw.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _leaf_keys(value, f"{prefix}{key}.")
    return keys
