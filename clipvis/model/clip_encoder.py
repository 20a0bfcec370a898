"""The frozen convolutional CLIP (open_clip): multi-scale features, mask pooling, text encoding.

Two trunk families are supported, as in the reference (docs/method.md §2.4, §2.6):
- "resnet": open_clip's ModifiedResNet (RN50, RN101, RN50x4, ..., and `clipvis_toy_rn`);
- "convnext": a timm ConvNeXt inside open_clip's TimmModel (convnext_base_w_320, ...,
  and `clipvis_toy_convnext`).
The toy model configs in `clip_configs/` are registered with open_clip when this module is imported.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.timm_model import TimmModel
from timm.models.convnext import ConvNeXt
from torch import nn

from clipvis.errors import InputError
from clipvis.files import file_sha256

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "clip_configs"
open_clip.add_model_config(CONFIG_DIR)

FEATURE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
MASK_STRIDE = 4  # the segmenter's mask logits are at a quarter of the (padded) input
PRETRAINED_SET_KEY = "clip.pretrained"  # the config key that points at a local checkpoint
TEXT_TOWER = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection", "attn_mask")
RANDOM_WEIGHTS_SEED = 0  # random-weight CLIPs (pretrained None) are the same in every process


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state dict's names and tensor bytes."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FrozenCLIP(nn.Module):
    """A frozen open_clip CLIP with a convolutional image trunk.

    `pretrained` is an open_clip tag (e.g. "openai", "laion_aesthetic_s13b_b82k"), a checkpoint file
    (.pt/.bin/.safetensors; .pt is read with weights_only=True), or None for random weights. Random
    weights come from a fixed seed (RANDOM_WEIGHTS_SEED), so every process that builds the same model
    gets the same CLIP (a checkpoint holds only the trained parts), and torch's global generator is
    left as it was.
    `cache_dir` is where open_clip finds (or downloads) tagged weights; None means its default.
    `quick_gelu` chooses the text tower's activation; None means as the tag says (QuickGELU for
    OpenAI's weights). OpenAI weights given as a file need quick_gelu=True (or open_clip's
    "-quickgelu" model name, e.g. RN50-quickgelu).

    `dense_stride` is the stride of `clip_dense`, the map masks are pooled on: 32 is the last stage, as
    the paper pools; 16 (ResNet trunks only) runs the last stage again on the stride-16 map without its
    downsampling (`stage_without_downsampling`), the same weights on a grid twice as fine.

    Every parameter is frozen and the CLIP stays in eval mode whatever `train()` says, so batch-norm
    statistics never change. Inputs are RGB images normalised with `pixel_mean`/`pixel_std`
    (0-255 scale, shape (3, 1, 1)) and padded to a multiple of 32.
    """

    def __init__(self, model_name: str, pretrained: str | None = None, cache_dir: str | None = None,
                 quick_gelu: bool | None = None, dense_stride: int = 32):
        super().__init__()
        self.model_name = model_name
        self.pretrained = pretrained
        self.clip = _create_open_clip(model_name, pretrained, cache_dir, quick_gelu)
        self.clip.requires_grad_(False)
        self.clip.eval()
        self.family = trunk_family(self.clip, model_name)
        check_dense_stride(dense_stride, self.family, model_name)
        self.dense_stride = dense_stride
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.embed_dim: int = self.clip.text_projection.shape[1]
        self._weights_id: str | None = None
        self.channels_last = False  # see `use_channels_last`

        preprocess = self.clip.visual.preprocess_cfg
        self.register_buffer("pixel_mean", torch.tensor(preprocess["mean"]).view(3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(preprocess["std"]).view(3, 1, 1) * 255, persistent=False)

        visual = self.clip.visual
        if self.family == "resnet":
            trunk_channels = [layer[-1].conv3.out_channels for layer in
                              (visual.layer1, visual.layer2, visual.layer3, visual.layer4)]
        else:
            trunk_channels = [info["num_chs"] for info in visual.trunk.feature_info]
        self.out_channels: dict[str, int] = {f"res{i + 2}": c for i, c in enumerate(trunk_channels)}
        self.out_channels["clip_dense"] = self.out_channels["res5"]
        self.strides = {**FEATURE_STRIDES, "clip_dense": dense_stride}

    @classmethod
    def from_state_dict(cls, model_name: str, state: dict[str, torch.Tensor], weights_id: str,
                        quick_gelu: bool | None = None, source: str = "checkpoint",
                        dense_stride: int = 32) -> FrozenCLIP:
        """The CLIP `model_name` with the open_clip weights `state` (e.g. those kept in a segmenter
        checkpoint); `weights_id` names them in text-embedding cache keys. Every key must fit."""
        clip = cls(model_name, None, quick_gelu=quick_gelu, dense_stride=dense_stride)
        try:
            clip.clip.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise InputError(source, "clip", f"the CLIP weights do not fit open_clip {model_name}: "
                                             f"{_one_line(error)}") from None
        clip.pretrained = source
        clip._weights_id = weights_id
        return clip

    def train(self, mode: bool = True) -> FrozenCLIP:
        super().train(mode)
        self.clip.eval()
        return self

    def drop_text_tower(self) -> None:
        """Free the text tower (RN50: 64 M of its 102 M weights; ConvNeXt-B: 91 M of 179 M) once the
        vocabulary is embedded: classification needs only the text embeddings. `weights_id` keeps the
        value it had with every weight; `encode_text` fails afterwards."""
        self.weights_id  # noqa: B018  (fixed while the text weights are still there)
        for name in TEXT_TOWER:
            if hasattr(self.clip, name):
                delattr(self.clip, name)

    def use_channels_last(self) -> None:
        """From now on, run a ResNet trunk channels-last: its convolution kernels are stored so, images are fed
        so, and its features leave so (the pixel decoder takes them as they come). The same sums in another
        order (float rounding); on a 2-core Xeon with AMX, the R50 network at 480x640 took 0.57 s instead of
        0.90 under bfloat16 autocast, 0.98 instead of 1.02 in float32. ConvNeXt trunks (timm) were no faster
        so and are left as they are. Inference switches to it (`CLIPVIS.infer`); training keeps the default
        layout, so its runs repeat as before."""
        if self.family == "resnet" and not self.channels_last:
            self.clip.visual.to(memory_format=torch.channels_last)
            self.channels_last = True

    @property
    def logit_scale(self) -> float:
        """CLIP's learned log temperature (ln 100 for OpenAI RN50)."""
        return float(self.clip.logit_scale.reshape(-1)[0])

    @property
    def weights_id(self) -> str:
        """What identifies the weights: the tag, the checkpoint's sha256, or a hash of the weights."""
        if self._weights_id is None:
            if self.pretrained is None:
                self._weights_id = f"random:{state_sha256(self.clip.state_dict())}"
            elif open_clip.pretrained.is_pretrained_cfg(self.model_name, self.pretrained):
                self._weights_id = f"tag:{self.pretrained}"
            else:
                self._weights_id = f"sha256:{file_sha256(self.pretrained)}"
        return self._weights_id

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.features(images)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised images -> res2..res5 (strides 4..32) and clip_dense (stride `dense_stride`)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return trunk_features(self.clip.visual, self.family, images, self.dense_stride)

    @torch.no_grad()
    def pool_masks(self, dense: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP embeddings of mask regions.

        dense: (B, C, h, w) `clip_dense` features; mask_logits: (B, Q, H', W'), resized bilinearly to
        (h, w) and binarised at logit > 0. Returns embeddings (B, Q, embed_dim) and valid (B, Q) bool
        (see `pool_regions`).
        """
        return pool_regions(self.clip.visual, self.family, dense, binarise_masks(mask_logits, dense.shape[-2:]))

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids (L <= context length, zero-padded after the end token) -> (N, embed_dim).

        Unnormalised, as open_clip's encode_text. Only the first L positions are computed: with the
        causal mask no position before the end token sees later ones, so cutting the padding off
        gives the same embeddings.
        """
        clip = self.clip
        if not hasattr(clip, "transformer"):
            raise RuntimeError("the CLIP's text tower was dropped (drop_text_tower): embed the vocabulary before")
        length = tokens.shape[1]
        dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(dtype) + clip.positional_embedding[:length].to(dtype)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # end token has the largest id
        return x @ clip.text_projection


def binarise_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, Q, H', W') mask logits -> (B, Q, h, w) bool on the dense map: resized bilinearly to `size`, logit > 0,
    as the reference binarises masks for classification."""
    if tuple(mask_logits.shape[-2:]) != tuple(size):
        mask_logits = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    return mask_logits > 0


def cover_logits(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) masks (bool or 0..1), H and W multiples of 4 -> (..., H/4, W/4) logits 2 * cover - 1 of each
    4 x 4 cell: a ground-truth mask as the segmenter's mask logits would show it (positive where more than
    half of a cell is covered)."""
    cover = F.avg_pool2d(masks.float().flatten(0, -3)[:, None], MASK_STRIDE)[:, 0]
    return (2 * cover - 1).view(*masks.shape[:-2], *cover.shape[-2:])


def trunk_features(visual: nn.Module, family: str, images: torch.Tensor,
                   dense_stride: int = 32) -> dict[str, torch.Tensor]:
    """A CLIP image tower's trunk on (B, 3, H, W) normalised images -> res2..res5 (strides 4..32) and
    clip_dense (res5, or at `dense_stride` 16 the last stage undownsampled on res4), without its pooling
    head; differentiable (FrozenCLIP runs it without gradients)."""
    out = {}
    if family == "resnet":
        x = visual.stem(images)  # conv1-3 + avgpool: stride 4
        for i, layer in enumerate((visual.layer1, visual.layer2, visual.layer3, visual.layer4)):
            x = layer(x)
            out[f"res{i + 2}"] = x
        out["clip_dense"] = x if dense_stride == 32 else stage_without_downsampling(visual.layer4, out["res4"])
        return out
    trunk = visual.trunk
    x = trunk.stem(images)
    for i, stage in enumerate(trunk.stages):
        x = stage(x)
        out[f"res{i + 2}"] = x
    out["clip_dense"] = trunk.norm_pre(x)  # Identity for these models
    return out


def stage_without_downsampling(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A ModifiedResNet stage (open_clip Bottleneck blocks) at the stride of its input (B, C, h, w): each
    block as open_clip runs it, less the average pools that downsample (after conv2, and before the
    shortcut's 1x1 conv)."""
    for block in stage:
        shortcut = x if block.downsample is None else block.downsample[1:](x)  # [0] is the pool
        out = block.act1(block.bn1(block.conv1(x)))
        out = block.act2(block.bn2(block.conv2(out)))
        x = block.act3(block.bn3(block.conv3(out)) + shortcut)
    return x


def check_dense_stride(dense_stride: int, family: str, model_name: str) -> None:
    if dense_stride not in (16, 32):
        raise ValueError(f"dense_stride must be 16 or 32, got {dense_stride!r}")  # the config checks it for users
    if dense_stride == 16 and family != "resnet":
        raise InputError(f"open_clip {model_name}", "clip.dense_stride",
                         "16 needs a ResNet CLIP (a ConvNeXt stage downsamples with a strided convolution)")


def pool_regions(visual: nn.Module, family: str, dense: torch.Tensor,
                 masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP embeddings (B, Q, embed_dim) of regions of the dense map (B, C, h, w), masks (B, Q, h, w) bool, and
    valid (B, Q); differentiable.

    ConvNeXt: average of the features over the mask, then CLIP's trunk head (LayerNorm) and projection; an
    empty mask gives a constant embedding (LayerNorm of zeros) and stays valid, as in the reference.
    ResNet: attention pooling restricted to the mask (`masked_attention_pool`); an empty mask has no
    embedding (the reference gets NaN): it is marked invalid and its embedding is zero.
    """
    if family == "resnet":
        return masked_attention_pool(visual.attnpool, dense, masks)
    weights = masks.flatten(2).to(dense.dtype)  # (B, Q, hw)
    weights = weights / (weights.sum(-1, keepdim=True) + 1e-8)
    pooled = weights @ dense.flatten(2).transpose(1, 2)  # (B, Q, C)
    batch, queries, channels = pooled.shape
    x = visual.head(visual.trunk.head(pooled.reshape(batch * queries, channels, 1, 1)))
    return x.view(batch, queries, -1), masks.new_ones(masks.shape[:2])


def pooling_head(visual: nn.Module, family: str) -> list[nn.Module]:
    """The modules of a CLIP image tower that `pool_regions` runs and `trunk_features` does not: what a
    segmenter built on the trunk never reads."""
    return [visual.attnpool] if family == "resnet" else [visual.trunk.head, visual.head]


def masked_attention_pool(pool: nn.Module, dense: torch.Tensor,
                          masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's attention pool (`pool`) with one query per mask, attending only inside its mask.

    dense: (B, C, h, w); masks: (B, Q, h, w) bool -> embeddings (B, Q, D), valid (B, Q). The query (mean
    of all positions + class positional embedding) is the same for every mask, so the attention logits
    are computed once per image and only the softmax support differs.
    """
    batch, channels, height, width = dense.shape
    heads = pool.num_heads
    head_dim = channels // heads

    pos = pool.positional_embedding.to(dense.dtype)  # (1 + g*g, C)
    grid = math.isqrt(pos.shape[0] - 1)
    spatial_pos = pos[1:].T.reshape(1, channels, grid, grid)
    spatial_pos = F.interpolate(spatial_pos, size=(height, width), mode="bilinear", align_corners=False)
    tokens = dense.flatten(2)  # (B, C, hw)
    key_value = (tokens + spatial_pos.flatten(2)).transpose(1, 2)  # (B, hw, C)
    query = tokens.mean(-1) + pos[0]  # (B, C)

    # Each head's logit q_h . (W_h kv + b_h) is computed as (W_h^T q_h) . kv: the bias term is the same
    # at every position, which the softmax ignores, and no key projection of all positions is needed.
    q = pool.q_proj(query).view(batch, heads, head_dim)
    q_input = torch.einsum("bhd,hdc->bhc", q, pool.k_proj.weight.view(heads, head_dim, channels))
    logits = (q_input @ key_value.transpose(1, 2)).unsqueeze(2) / math.sqrt(head_dim)  # (B, heads, 1, hw)
    v = pool.v_proj(key_value).view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, heads, hw, d)

    inside = masks.flatten(2).unsqueeze(1)  # (B, 1, Q, hw)
    attention = torch.where(inside, logits, float("-inf")).softmax(-1)  # (B, heads, Q, hw); NaN rows if empty
    valid = inside.any(-1).squeeze(1)  # (B, Q)
    attention = attention.nan_to_num(0.0)
    pooled = (attention @ v).transpose(1, 2).reshape(batch, -1, channels)  # (B, Q, C)
    return pool.c_proj(pooled) * valid.unsqueeze(-1), valid


def _create_open_clip(model_name: str, pretrained: str | None, cache_dir: str | None,
                      quick_gelu: bool | None = None) -> nn.Module:
    """Build the open_clip model; bad names, missing weights and wrong checkpoints are InputErrors.

    `quick_gelu` None means: as the tag says (OpenAI's weights were trained with QuickGELU), else GELU.
    """
    source = f"open_clip {model_name}" + (f"/{pretrained}" if pretrained else "")
    if model_name not in open_clip.list_models():
        raise InputError(source, "", "unknown open_clip model name (convolutional CLIPs: RN50, RN101, "
                                     "convnext_base_w_320, ..., clipvis_toy_rn, clipvis_toy_convnext)")
    tag_cfg = open_clip.pretrained.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    if pretrained and not tag_cfg and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise InputError(pretrained, "", f"neither an open_clip tag of {model_name} (tags: {tags}) "
                                         "nor an existing checkpoint file")
    force_quick_gelu = uses_quick_gelu(model_name, pretrained, quick_gelu)
    if not pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return open_clip.create_model(model_name, force_quick_gelu=force_quick_gelu)
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, cache_dir=cache_dir, force_quick_gelu=force_quick_gelu)
    except Exception as e:
        if not tag_cfg:
            raise InputError(pretrained, "", f"not a loadable checkpoint of {model_name}: {_one_line(e)}") from None
        if isinstance(e, RuntimeError):  # open_clip's error for weights it could not fetch or load
            raise InputError(source, "", f"weights not available ({_one_line(e, 160)}); "
                                         f"{_where_to_put(tag_cfg, cache_dir)}, or pass "
                                         f"--set {PRETRAINED_SET_KEY}=/path/to/checkpoint.pt") from None
        raise
    return model


def uses_quick_gelu(model_name: str, pretrained: str | None, quick_gelu: bool | None) -> bool:
    """Whether the text tower of `model_name` with these weights uses QuickGELU: as `quick_gelu` says, else
    as the open_clip tag says. (open_clip 3 builds tagged OpenAI weights with plain GELU unless asked; the
    authors' open_clip 2.24 used QuickGELU for them, as they were trained.)"""
    if quick_gelu is not None:
        return quick_gelu
    return bool(pretrained and open_clip.pretrained.get_pretrained_cfg(model_name, pretrained).get("quick_gelu"))


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _where_to_put(tag_cfg: dict, cache_dir: str | None) -> str:
    """Tell the user which file open_clip looks for, and where."""
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import constants

        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        return (f"put {filename} of huggingface.co/{repo} in the Hugging Face cache "
                f"{cache_dir or constants.HF_HUB_CACHE} (`hf download {repo} {filename}` on a machine "
                f"with internet, then copy the cache)")
    url = tag_cfg["url"]
    return f"put {os.path.basename(url)} (from {url}) in {cache_dir or os.path.expanduser('~/.cache/clip')}"


def trunk_family(clip: nn.Module, model_name: str) -> str:
    if not (isinstance(clip, open_clip.CLIP) and clip.text_pool_type == "argmax"
            and isinstance(clip.text_projection, nn.Parameter)):
        raise InputError(f"open_clip {model_name}", "", "only CLIPs with open_clip's own text tower "
                                                        "(end-token pooling, matrix projection) are supported")
    visual = clip.visual
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if isinstance(visual, TimmModel) and isinstance(visual.trunk, ConvNeXt):
        return "convnext"
    raise InputError(f"open_clip {model_name}", "", "not a convolutional CLIP (ModifiedResNet or timm ConvNeXt trunk)")
