"""Segmenter checkpoints: the trained weights and the resolved config that made them.

A checkpoint is a dict of tensors and plain values, written atomically and read with weights_only=True:

    model      the trained weights (everything but the frozen CLIP)
    config     the resolved config (`clipvis.config.to_dict`)
    iteration  optimiser steps done
    optimizer, scheduler   training state (in checkpoint_last.pt only)
    clip, clip_id          the frozen CLIP's open_clip weights and their digest: in checkpoints imported
                           from the authors' files, which hold the CLIP they trained with

Commands get their config from `config_for_checkpoint`: the checkpoint's own when no params file is
named; else the params file's, refused when it describes another network than the checkpoint holds.
A checkpoint's CLIP weights are used unless `--set clip.pretrained=...` names others; the config then
says `clip.pretrained: checkpoint`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from clipvis.config import Config, is_overridden, load_config, to_dict
from clipvis.errors import InputError
from clipvis.files import atomic_path
from clipvis.model.clip_encoder import FrozenCLIP, state_sha256, uses_quick_gelu
from clipvis.model.clipvis_model import CLIPVIS

log = logging.getLogger(__name__)

CHECKPOINT_CLIP = "checkpoint"  # clip.pretrained: the CLIP weights kept in the segmenter checkpoint


def save_checkpoint(path: str | Path, model: CLIPVIS, cfg: Config, iteration: int = 0, optimizer=None,
                    scheduler=None, clip: dict[str, torch.Tensor] | None = None, clip_id: str | None = None) -> None:
    """Write a checkpoint atomically; `clip` (open_clip weights, digest `clip_id` if known) is kept in it."""
    state = {"model": model.trainable_state_dict(), "iteration": iteration, "config": to_dict(cfg)}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
        state["scheduler"] = scheduler.state_dict()
    if clip is not None:
        state["clip"] = clip
        state["clip_id"] = clip_id or state_sha256(clip)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A clipvis checkpoint, memory-mapped (tensors are read when used), loaded with weights_only=True."""
    state = read_torch_file(path, "clipvis checkpoint")
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise InputError(path, "model", "not a clipvis checkpoint (no model/config entries); a file of the "
                                        "authors' CLIP-VIS is read with `clipvis import-checkpoint`")
    return state


def read_torch_file(path: str | Path, what: str):
    """torch.load with weights_only=True (memory-mapped where the format allows); errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "", f"is a folder, not a {what}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # an old (non-zip) format file cannot be mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "", f"{what} not found") from None
    except PermissionError:
        raise InputError(path, "", "cannot read the file (permission denied)") from None
    except Exception as error:
        reason = "it holds objects other than tensors" if "Weights only load failed" in str(error) \
            else "truncated, or not a file written by torch.save"
        raise InputError(path, "", f"not a loadable {what} ({reason})") from None


def checkpoint_config(state: dict, path: str | Path) -> Config:
    return load_config(None, base=state["config"], base_source=f"{path} (its config)")


def config_for_checkpoint(checkpoint: str | Path, params: str | Path | None,
                          overrides: list[str]) -> tuple[Config, dict]:
    """The config a command runs `checkpoint` with, and the checkpoint.

    Without `params` it is the checkpoint's own config; with `params`, the network it describes must be
    the checkpoint's. `overrides` (`--set KEY=VALUE`) apply on top either way.
    """
    state = load_checkpoint(checkpoint)
    if params is None:
        cfg = load_config(None, overrides, base=state["config"], base_source=f"{checkpoint} (its config)")
    else:
        cfg = load_config(params, overrides)
        check_architecture(state, cfg, checkpoint)
    if "clip" in state and not is_overridden(overrides, "clip.pretrained"):
        saved = checkpoint_config(state, checkpoint).clip
        cfg.clip.pretrained = CHECKPOINT_CLIP
        cfg.clip.quick_gelu = uses_quick_gelu(saved.model, saved.pretrained, saved.quick_gelu)
    return cfg, state


def check_architecture(state: dict, cfg: Config, path: str | Path, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a checkpoint whose network (model section, CLIP model) differs from `cfg`'s, naming the keys;
    model keys in `ignore` may differ."""
    saved = checkpoint_config(state, path)
    differing = {f"model.{key}": (value, getattr(cfg.model, key))
                 for key, value in to_dict(saved.model).items()
                 if getattr(cfg.model, key) != value and key not in ignore}
    if saved.clip.model != cfg.clip.model:
        differing["clip.model"] = (saved.clip.model, cfg.clip.model)
    if differing:
        listed = ", ".join(f"{key} {ours!r} (config: {theirs!r})" for key, (ours, theirs) in differing.items())
        fix = " ".join(f"{key}={ours}" for key, (ours, _) in differing.items())
        raise InputError(path, "config", f"the checkpoint's network differs from the config's: {listed}; leave "
                                         f"out --params to use the checkpoint's own config, or --set {fix}")


def load_model(cfg: Config, checkpoint: str | Path | None, device: torch.device | str = "cpu") -> CLIPVIS:
    """The segmenter of `cfg` with the weights of the checkpoint file (None: random weights), in eval mode
    on `device`; a checkpoint of another network is refused before the model is built."""
    if checkpoint is None:
        log.warning("no checkpoint: the segmenter has random weights")
        return build_model(cfg).to(device)
    state = load_checkpoint(checkpoint)
    check_architecture(state, cfg, checkpoint)
    return build_model(cfg, state, checkpoint).to(device)


def build_model(cfg: Config, state: dict | None = None, source: str | Path = "checkpoint") -> CLIPVIS:
    """The segmenter of `cfg` with the weights of checkpoint `state` (None: random weights), in eval mode.

    With `clip.pretrained: checkpoint` the frozen CLIP's weights come from the checkpoint too.
    """
    clip = None
    if cfg.clip.pretrained == CHECKPOINT_CLIP:
        if state is None or "clip" not in state:
            raise InputError(source, "clip", "clip.pretrained is 'checkpoint' but the checkpoint holds no CLIP "
                                             "weights; --set clip.pretrained=TAG_OR_FILE")
        clip = FrozenCLIP.from_state_dict(cfg.clip.model, state["clip"], f"sha256:{state['clip_id']}",
                                          cfg.clip.quick_gelu, source=str(source), dense_stride=cfg.clip.dense_stride)
    model = CLIPVIS.from_config(cfg.model, cfg.clip, clip)
    if state is not None:
        try:
            model.load_trainable_state_dict(state["model"])
        except ValueError as error:
            raise InputError(source, "model", str(error)) from None
    return model.eval()


def inference_device(setting: str) -> torch.device:
    """`infer.device`: "auto" is CUDA when available, else CPU; anything else is a torch device name."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as error:
        raise InputError("config", "infer.device", str(error)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("config", "infer.device", f"{setting!r} but torch sees no CUDA device (use cpu or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise InputError("config", "infer.device", f"{setting!r} but there are {torch.cuda.device_count()} "
                                                   "CUDA devices")
    return device
