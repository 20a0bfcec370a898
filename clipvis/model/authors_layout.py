"""The authors' checkpoint layout (their detectron2 CLIP-VIS files) and ours, key by key.

Their file is ``{"model": state_dict}`` (or a bare state_dict, possibly with training state beside it):

    backbone.clip_model.*                  the frozen open_clip model, same keys as open_clip's
    sem_seg_head.pixel_decoder.*           our `pixel_decoder`, with the renames of PIXEL_DECODER_RENAMES
    sem_seg_head.predictor.*               our `decoder`, same names
    criterion.empty_object_weight          a loss buffer (class weights [1, no-object weight]): not a weight

`from_authors_layout` splits such a state dict into our trainable weights and the CLIP's; every tensor
is either mapped or the one loss buffer, anything else is an error naming the key. `to_authors_layout`
is its inverse.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from pathlib import Path

import open_clip
import torch

from clipvis.config import Config, load_config
from clipvis.errors import InputError
from clipvis.files import atomic_path
from clipvis.model.checkpoint import (CHECKPOINT_CLIP, checkpoint_config, load_checkpoint, read_torch_file,
                                      save_checkpoint)
from clipvis.model.clip_encoder import FrozenCLIP, state_sha256, uses_quick_gelu
from clipvis.model.clipvis_model import CLIPVIS

log = logging.getLogger(__name__)

CLIP_PREFIX = "backbone.clip_model."
LOSS_BUFFER = "criterion.empty_object_weight"
# (authors' prefix, ours); the longest matching prefix wins in either direction.
RENAMES = (
    ("sem_seg_head.predictor.", "decoder."),
    ("sem_seg_head.pixel_decoder.transformer.encoder.layers.", "pixel_decoder.encoder."),
    ("sem_seg_head.pixel_decoder.transformer.level_embed", "pixel_decoder.level_embed"),
    ("sem_seg_head.pixel_decoder.adapter_1.norm.", "pixel_decoder.lateral_conv.1."),  # the FPN lateral conv
    ("sem_seg_head.pixel_decoder.adapter_1.", "pixel_decoder.lateral_conv.0."),
    ("sem_seg_head.pixel_decoder.layer_1.norm.", "pixel_decoder.output_conv.1."),  # the FPN output conv
    ("sem_seg_head.pixel_decoder.layer_1.", "pixel_decoder.output_conv.0."),
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),  # input_proj, mask_features
)
_DECODER_LAYER = re.compile(r"sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.")


def _rename(key: str, pairs: list[tuple[str, str]]) -> str | None:
    for source, target in sorted(pairs, key=lambda pair: -len(pair[0])):
        if key.startswith(source):
            return target + key[len(source):]
    return None


def ours_key(authors_key: str) -> str | None:
    """Our name of one of the authors' segmenter tensors (None: not a segmenter tensor)."""
    return _rename(authors_key, list(RENAMES))


def authors_key(our_key: str) -> str | None:
    """The authors' name of one of our trainable tensors."""
    return _rename(our_key, [(ours, theirs) for theirs, ours in RENAMES])


def authors_state_dict(loaded, source: str) -> dict[str, torch.Tensor]:
    """The state dict of a loaded authors' file: ``{"model": state_dict, ...}`` or a bare state dict."""
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state:
        raise InputError(source, "model", "no state dict in the file (expected {'model': state_dict} or a state dict)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InputError(source, f"model.{key}", "not a tensor: expected a state dict of tensors")
    return state


def from_authors_layout(state: dict[str, torch.Tensor],
                        source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The authors' state dict -> (our trainable weights, the CLIP's open_clip weights)."""
    ours, clip = {}, {}
    for key, tensor in state.items():
        if key.startswith(CLIP_PREFIX):
            clip[key[len(CLIP_PREFIX):]] = tensor
        elif key == LOSS_BUFFER:
            continue
        elif (renamed := ours_key(key)) is not None:
            ours[renamed] = tensor
        else:
            raise InputError(source, key, "unknown key: not part of the authors' CLIP-VIS video model")
    if not clip:
        raise InputError(source, CLIP_PREFIX + "*", "missing: the file holds no CLIP weights")
    return ours, clip


def to_authors_layout(trainable: dict[str, torch.Tensor], clip: dict[str, torch.Tensor],
                      no_object_weight: float) -> dict[str, torch.Tensor]:
    """Our trainable weights and the CLIP's -> the authors' state dict (with their loss buffer)."""
    state = {CLIP_PREFIX + key: tensor for key, tensor in clip.items()}
    for key, tensor in trainable.items():
        renamed = authors_key(key)
        if renamed is None:
            raise ValueError(f"{key} has no name in the authors' layout")
        state[renamed] = tensor
    state[LOSS_BUFFER] = torch.tensor([1.0, no_object_weight])
    return state


def decoder_layers(state: dict[str, torch.Tensor]) -> int:
    """The number of query-decoder layers in the authors' state dict (their DEC_LAYERS is one more)."""
    layers = {int(match.group(1)) for key in state if (match := _DECODER_LAYER.match(key))}
    return max(layers) + 1 if layers else 0


# ---------------------------------------------------------------- import and export

KNOWN_CLIPS = ("RN50", "RN101", "convnext_base_w_320", "convnext_large_d_320")  # what a file's CLIP may be


def import_checkpoint(source: str | Path, cfg: Config, out: str | Path, params: str | Path | None = None) -> Config:
    """Convert the authors' file `source` into a clipvis checkpoint at `out` that keeps their CLIP.

    The file's network must be the one `cfg` describes (decoder depth, CLIP model, every shape); a
    mismatch is an InputError naming the key and, where one fits, the params file (beside `params`)
    or --set that would. Returns the config written into the checkpoint.
    """
    loaded = read_torch_file(source, "checkpoint of the authors' CLIP-VIS")
    state = authors_state_dict(loaded, str(source))
    trainable, clip_state = from_authors_layout(state, str(source))
    layers = decoder_layers(state)
    file_clip = _check_clip_model(clip_state, cfg.clip.model, layers + 1, source, params)
    if layers + 1 != cfg.model.dec_layers:
        hint = _params_hint(params, file_clip, layers + 1, f"model.dec_layers={layers + 1}")
        raise InputError(source, "sem_seg_head.predictor", f"{layers} decoder layers (their DEC_LAYERS "
                                                           f"{layers + 1}) but the config has model.dec_layers="
                                                           f"{cfg.model.dec_layers}; {hint}")
    cfg = copy.deepcopy(cfg)
    cfg.clip.quick_gelu = uses_quick_gelu(cfg.clip.model, cfg.clip.pretrained, cfg.clip.quick_gelu)
    cfg.clip.pretrained = CHECKPOINT_CLIP
    clip_id = state_sha256(clip_state)
    frozen = FrozenCLIP.from_state_dict(cfg.clip.model, clip_state, f"sha256:{clip_id}", cfg.clip.quick_gelu,
                                        source=str(source), dense_stride=cfg.clip.dense_stride)
    model = CLIPVIS.from_config(cfg.model, cfg.clip, frozen)
    _check_segmenter_tensors(trainable, model, source)
    model.load_trainable_state_dict(trainable)
    iteration = loaded.get("iteration", 0) if isinstance(loaded, dict) else 0
    save_checkpoint(out, model, cfg, iteration if isinstance(iteration, int) else 0, clip=clip_state,
                    clip_id=clip_id)
    log.info("imported %s (%d decoder layers, CLIP %s) into %s", source, layers, cfg.clip.model, out)
    return cfg


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> None:
    """Write a clipvis checkpoint in the authors' layout (``{"model": state_dict, "iteration": n}``), with
    the CLIP it runs on: the checkpoint's own CLIP weights, else those its config names."""
    state = load_checkpoint(checkpoint)
    cfg = checkpoint_config(state, checkpoint)
    if "clip" in state:
        clip_state = state["clip"]
    else:
        clip_state = FrozenCLIP(cfg.clip.model, cfg.clip.pretrained, quick_gelu=cfg.clip.quick_gelu).clip.state_dict()
    authors = to_authors_layout(state["model"], clip_state, cfg.train.no_object_weight)
    with atomic_path(out) as tmp:
        torch.save({"model": authors, "iteration": state["iteration"]}, tmp)


def _check_clip_model(clip_state: dict[str, torch.Tensor], model_name: str, dec_layers: int, source,
                      params) -> str:
    """The open_clip model the file's CLIP weights are; InputError unless it is `model_name` (the hint
    names params with the file's CLIP and `dec_layers`)."""
    if _shape_mismatch(clip_state, model_name) is None:
        return model_name
    for candidate in KNOWN_CLIPS:
        if candidate != model_name and _shape_mismatch(clip_state, candidate) is None:
            hint = _params_hint(params, candidate, dec_layers, f"clip.model={candidate}")
            raise InputError(source, CLIP_PREFIX + "*", f"the file's CLIP is {candidate}, the config's is "
                                                        f"{model_name}; {hint}")
    key, problem = _shape_mismatch(clip_state, model_name)
    raise InputError(source, CLIP_PREFIX + key, f"{problem}: the file's CLIP is not {model_name} (nor any of "
                                                f"{', '.join(KNOWN_CLIPS)})")


def _shape_mismatch(clip_state: dict[str, torch.Tensor], model_name: str) -> tuple[str, str] | None:
    """The first key where the weights differ from open_clip `model_name`'s, and how (None: they fit)."""
    expected = _clip_shapes(model_name)
    for key, shape in expected.items():
        if key not in clip_state:
            return key, "missing"
        if tuple(clip_state[key].shape) != shape:
            return key, f"shape {list(clip_state[key].shape)}, {model_name} has {list(shape)}"
    for key in clip_state:
        if key not in expected:
            return key, "unknown key"
    return None


@functools.cache
def _clip_shapes(model_name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of open_clip `model_name`'s state dict, built without allocating weights."""
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded
    try:
        model = open_clip.create_model(model_name, device="meta")
    finally:
        logging.disable(logging.NOTSET)
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def _check_segmenter_tensors(trainable: dict[str, torch.Tensor], model: CLIPVIS, source) -> None:
    """Every segmenter tensor of the model present in the file with its shape; errors in the authors' names."""
    expected = model.trainable_state_dict()
    for key, tensor in expected.items():
        if key not in trainable:
            raise InputError(source, authors_key(key), "missing from the file")
        if trainable[key].shape != tensor.shape:
            raise InputError(source, authors_key(key), f"shape {list(trainable[key].shape)}, the configured "
                                                       f"model has {list(tensor.shape)}")
    for key in trainable:
        if key not in expected:
            raise InputError(source, authors_key(key), "the configured model has no such tensor (another "
                                                       "number of encoder layers or heads?)")


def _params_hint(params, clip_model: str, dec_layers: int, setting: str) -> str:
    """'use --params X' for a params file beside `params` with this CLIP and decoder depth, else '--set ...'."""
    if params is not None:
        for candidate in sorted(Path(params).parent.glob("*.yaml")):
            try:
                other = load_config(candidate)
            except InputError:
                continue
            if other.clip.model == clip_model and other.model.dec_layers == dec_layers:
                return f"use --params {candidate} (or --set {setting})"
    return f"pass --set {setting}"
