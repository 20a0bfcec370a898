"""One typed configuration, loaded from `params/*.yaml` with `_base_` inheritance and `--set` overrides.

    cfg = load_config("params/toy/default.yaml", ["toy.seed=3"])
    save_config(cfg, "runs/x/config.yaml")

Unknown keys, wrong types and missing required values raise `InputError` naming the key and the
file (or `--set` for command-line overrides). A YAML file may start with `_base_: other.yaml`
(or a list of files, relative to it); its own values are merged over the bases, key by key.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clipvis.errors import InputError
from clipvis.files import read_yaml, write_yaml
from clipvis.layout import RUNS, TEXT_CACHE, toy_clip

log = logging.getLogger(__name__)

BASE_KEY = "_base_"
# The test-time variants of the ablation tables: name -> list of KEY=VALUE overrides.
VARIANTS_PARAMS = "params/variants.yaml"
# The toy CLIP the pipeline pretrains (the toy scale's CLIP weights).
TOY_CLIP_PATH = toy_clip(RUNS, "toy").as_posix()


@dataclass
class ToyWorldConfig:
    """The generated toy world (`clipvis data --benchmark toy`)."""

    seed: int = 0
    colours: list[str] = field(default_factory=lambda: ["red", "green", "blue", "yellow", "purple", "orange"])
    shapes: list[str] = field(default_factory=lambda: ["circle", "square", "triangle", "star", "ring"])
    novel_fraction: float = 1 / 3
    frame_size: int = 192  # frame height in pixels
    frame_aspect: float = 1.25  # width / height (not square, so that height/width mix-ups show)
    min_frames: int = 12  # per video; 12 or more lets every exit object leave and come back
    max_frames: int = 36
    max_objects: int = 4  # per video and image; toy_ovis has up to twice as many
    train_images: int = 2400  # segmenter training images (toy_lvis_train); README, column J
    val_images: int = 100  # held-out images, all categories annotated (toy_lvis_val)
    train_videos: int = 40
    val_videos: int = 30
    ovis_videos: int = 20
    caption_images: int = 2000  # image-caption pairs for pretraining the toy CLIP
    heldout_captions: int = 300  # single-object images for zero-shot accuracy, every category in turn


@dataclass
class DataConfig:
    root: str = "data"  # the one default data root, at every scale (`--root` or $CLIPVIS_DATA override it)
    train: str = "toy_lvis_train"  # benchmark the segmenter trains on
    test: list[str] = field(default_factory=lambda: ["toy_lvvis", "toy_ovis"])


@dataclass
class ClipConfig:
    """The frozen CLIP: an open_clip model name and an open_clip tag, a checkpoint path, or null (random)."""

    model: str = "clipvis_toy_rn"
    pretrained: str | None = TOY_CLIP_PATH
    # QuickGELU in the text tower; None: as the open_clip tag says (OpenAI's weights were trained with it)
    quick_gelu: bool | None = None
    text_cache: str = TEXT_CACHE
    # stride of the dense map masks are pooled on: 32 is CLIP's last stage, as the paper pools; 16 (the toy's)
    # runs that stage again, undownsampled, on the stride-16 map (ResNet CLIPs): on 192-pixel frames the
    # stride-32 grid is 6 x 8 cells and loses thin or half-hidden objects
    dense_stride: Literal[16, 32] = 16


@dataclass
class ModelConfig:
    """The segmenter (docs/method.md §2–§4). `dec_layers` counts prediction sets as the authors'
    MODEL.MASK_FORMER.DEC_LAYERS does: the decoder has dec_layers - 1 layers."""

    hidden_dim: int = 64
    num_queries: int = 20
    heads: int = 4
    dec_layers: int = 4
    dec_ffn_dim: int = 256
    enc_layers: int = 2
    enc_ffn_dim: int = 256
    enc_points: int = 2
    mask_dim: int = 64
    iou_head_input: Literal["query", "pooled"] = "query"
    iou_activation: Literal["sigmoid", "relu"] = "sigmoid"


@dataclass
class ScoringConfig:
    """Weighted open-vocabulary classification (paper §III-C; Tables II–IV)."""

    weighted: bool = True  # WOC: weight CLIP class scores by object and IoU scores
    object_score: bool = True
    iou_score: bool = True
    detections_per_video: int = 50
    detections_per_image: int = 100


@dataclass
class MatchingConfig:
    """Temporal matching (paper §III-B; Table V)."""

    strategy: Literal["topk", "adjacent", "longterm"] = "topk"
    memory: int = 9
    topk: int = 3
    recency_weighting: bool = False


@dataclass
class InferConfig:
    min_size: int = 240  # the toy frames (192x240) enlarged 1.25x: README, column G
    max_size: int = 400
    # How a frame is downscaled to `min_size`: "pil" is PIL's bilinear, as the authors' detectron2 code
    # (released weights then give their outputs exactly); "torch" is torch's antialiased bilinear, which
    # differs by at most a couple of grey levels and runs on the inference device.
    resize: Literal["pil", "torch"] = "pil"
    frames_per_chunk: int = 4
    device: str = "auto"
    # "bf16": the network runs under bfloat16 autocast (sampling locations stay float32); classification,
    # matching and scoring stay float32. Faster where the CPU has bf16 instructions (avx512_bf16, AMX) or on CUDA.
    precision: Literal["fp32", "bf16"] = "fp32"
    # True: the network runs through torch.compile (inductor), compiled once per input size on first use
    # (a minute or more on 2 CPU cores), then about a sixth faster per frame on CPU; eager where compiling fails.
    compile: bool = False
    # True: on CPU, float32 linear layers run through oneDNN rather than MKL (clipvis.model.onednn_linear):
    # twice as fast on AMD CPUs, where MKL runs AVX2 code; the outputs move by float rounding.
    onednn_linear: bool = True


@dataclass
class TrainConfig:
    """Optimisation (docs/method.md §6.3–§6.10). Iterations count optimiser steps."""

    seed: int = 0
    batch_size: int = 4
    max_iter: int = 4000
    lr: float = 3e-4
    weight_decay: float = 0.05
    lr_steps: list[int] = field(default_factory=lambda: [3200, 3800])
    lr_gamma: float = 0.1
    grad_clip: float = 0.01
    amp: bool = False
    augmentation: Literal["lsj", "resize_shortest"] = "lsj"
    image_size: int = 192
    lsj_scale: list[float] = field(default_factory=lambda: [0.5, 1.5])
    min_size_train: list[int] = field(default_factory=lambda: [800])
    max_size_train: int = 1333
    repeat_factor_threshold: float | None = 0.001
    num_points: int = 1024
    weight_object: float = 2.0
    weight_iou: float = 2.0
    weight_mask: float = 5.0
    weight_dice: float = 5.0
    no_object_weight: float = 0.4
    # all: the whole segmenter learns; iou_head: only a fresh mask-IoU head learns, on the frozen model of --init
    # (Table IV's variants at toy scale, README)
    trainable: Literal["all", "iou_head"] = "all"
    checkpoint_every: int = 250
    log_every: int = 10
    num_workers: int = 0


@dataclass
class ClipPretrainConfig:
    """Pretraining of the toy CLIP on toy image–caption pairs, whole images at their own size (toy scale only)."""

    seed: int = 0
    epochs: int = 24
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    region_weight: float = 1.0  # the region loss against the caption loss (8 tried: README, the toy experiment's limits, column K)
    # then epochs that train only the pooling head and the text tower, the trunk frozen (README, column L)
    head_epochs: int = 8
    head_region_weight: float = 8.0
    out: str = TOY_CLIP_PATH


@dataclass
class LaunchConfig:
    """Where stages run: in process, or on SLURM through submitit."""

    launcher: Literal["local", "slurm"] = "local"
    partition: str = "debug"
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int = 8
    timeout_min: int = 60


@dataclass
class Config:
    name: str = "toy"
    scale: Literal["toy", "paper"] = "toy"
    data: DataConfig = field(default_factory=DataConfig)
    toy: ToyWorldConfig = field(default_factory=ToyWorldConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    clip_pretrain: ClipPretrainConfig = field(default_factory=ClipPretrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None,
                base_source: str = "<dict>") -> Config:
    """Config from a YAML file (with its bases), or from the mapping `base` (e.g. a checkpoint's config,
    named `base_source` in errors), and `key.sub=value` overrides."""
    if path:
        raw, sources = _read_with_bases(Path(path), seen=())
        default_source = str(path)
    else:
        raw, sources = copy.deepcopy(base or {}), {}
        default_source = base_source if base is not None else "--set"
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError("--set", item, "expected KEY=VALUE, e.g. toy.seed=3")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as error:
            raise InputError("--set", item, f"malformed value ({getattr(error, 'problem', error)})") from None
        _assign(raw, key.strip().split("."), value)
        sources[key.strip()] = "--set"
    return from_dict(Config, raw, default_source=default_source, sources=sources)


def is_overridden(overrides: list[str], key: str) -> bool:
    """Whether `--set` gives `key` (a dotted name) a value."""
    return any(item.partition("=")[0].strip() == key for item in overrides)


def save_config(cfg: Config, path: str | Path) -> None:
    write_yaml(path, to_dict(cfg))


# Training settings that may change between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = ("max_iter", "checkpoint_every", "log_every", "num_workers")


def training_settings(config: dict) -> dict:
    """What a training run's weights depend on, from a config dict: the training data (and toy world), the
    frozen CLIP, the network and the optimisation; not test-time settings (matching, scoring, infer),
    where it runs, nor the run's length and logging."""
    return {"data.train": config["data"]["train"], "toy": config["toy"],
            "clip": {key: value for key, value in config["clip"].items() if key != "text_cache"},
            "model": config["model"],
            "train": {key: value for key, value in config["train"].items() if key not in RESUMABLE_CHANGES}}


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: Any, default_source: str = "<dict>", sources: dict[str, str] | None = None,
              prefix: str = "") -> Any:
    """Build dataclass `cls` from nested dicts, checking every key and type."""
    sources = sources or {}

    def source_of(key: str) -> str:
        return sources.get(key, default_source)

    if not isinstance(data, dict):
        section = prefix.rstrip(".")
        raise InputError(source_of(section), section or "<top level>",
                         f"expected a mapping (a section of keys), got {data!r}")
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
    raw = read_yaml(path)
    if raw is None:
        log.warning("%s is empty: every value is the default", path)
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(path, "<top level>", "expected a mapping of config keys")
    bases = raw.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise InputError(path, BASE_KEY, f"expected a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    sources: dict[str, str] = {}
    for base in bases:
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


def variant_names(path: str | Path = VARIANTS_PARAMS) -> list[str]:
    """Every variant of a variants file, in the file's order (the workflow's default ablation list)."""
    return list(_variant_table(path))


def _variant_table(path: str | Path) -> dict:
    table = read_yaml(path)
    if not isinstance(table, dict):
        raise InputError(path, "", "expected a mapping of variant name -> list of KEY=VALUE overrides")
    return table


def read_variants(path: str | Path, names: list[str]) -> dict[str, list[str]]:
    """The overrides of each named variant; unknown names and malformed entries are InputErrors."""
    table = _variant_table(path)
    for name in names:
        if name not in table:
            raise InputError(path, name, f"unknown variant (known: {', '.join(table)})")
        if not isinstance(table[name], list) or not all(isinstance(item, str) for item in table[name]):
            raise InputError(path, name, "expected a list of KEY=VALUE strings")
    return {name: table[name] for name in names}
