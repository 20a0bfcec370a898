"""The CLIP-VIS network: frozen CLIP trunk → pixel decoder → masked-attention query decoder.

Frames are processed independently (there is no temporal interaction inside the network); temporal
matching and video scoring live in `clipvis.video`. Classification pools the frozen CLIP's dense
map (stride 32, or 16 with `clip.dense_stride`) under each predicted mask and compares it with the
vocabulary's text embeddings.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn

from clipvis.config import ClipConfig, ModelConfig
from clipvis.errors import InputError
from clipvis.model.clip_encoder import FrozenCLIP
from clipvis.model.onednn_linear import OneDNNLinears, onednn_available
from clipvis.model.pixel_decoder import PixelDecoder
from clipvis.model.query_decoder import QueryDecoder
from clipvis.model.text_classifier import TextEmbeddings, classification_logits

log = logging.getLogger(__name__)

SIZE_DIVISIBILITY = 32
EAGER = "eager"  # `_compiled_forward` once compiling has failed
IOU_HEAD_KEYS = "decoder.iou_head."  # the mask-IoU head's tensors in the state dict


class CLIPVIS(nn.Module):
    def __init__(self, clip: FrozenCLIP, pixel_decoder: PixelDecoder, decoder: QueryDecoder):
        super().__init__()
        self.clip = clip
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self._compiled_forward = None  # `infer(compiled=True)`: torch.compile'd forward, or EAGER after a failure

    @classmethod
    def from_config(cls, model: ModelConfig, clip: ClipConfig, frozen: FrozenCLIP | None = None) -> CLIPVIS:
        """The network of `model`, on the frozen CLIP of `clip` (or `frozen`, when already built)."""
        check_model_config(model)
        frozen = frozen or FrozenCLIP(clip.model, clip.pretrained, quick_gelu=clip.quick_gelu,
                                      dense_stride=clip.dense_stride)
        channels = [frozen.out_channels[f"res{i}"] for i in range(2, 6)]
        pixel_decoder = PixelDecoder(channels, conv_dim=model.hidden_dim, mask_dim=model.mask_dim,
                                     encoder_layers=model.enc_layers, heads=model.heads, points=model.enc_points,
                                     ffn_dim=model.enc_ffn_dim)
        decoder = QueryDecoder(hidden_dim=model.hidden_dim, num_queries=model.num_queries, heads=model.heads,
                               ffn_dim=model.dec_ffn_dim, layers=model.dec_layers - 1, mask_dim=model.mask_dim,
                               iou_head_input=model.iou_head_input, iou_activation=model.iou_activation)
        return cls(frozen, pixel_decoder, decoder)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen CLIP (which is loaded from its own weights)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}

    def freeze_all_but_iou_head(self) -> None:
        """Table IV's head-only protocol: only the mask-IoU head learns; the rest keeps its loaded weights."""
        self.requires_grad_(False)
        self.decoder.iou_head.requires_grad_(True)

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], keep_iou_head: bool = False) -> None:
        """Load everything but the frozen CLIP (and, with `keep_iou_head`, but the mask-IoU head, which keeps
        its own weights: the start of a head-only training); a missing, unexpected or misshapen tensor is a
        ValueError naming it."""
        expected = self.trainable_state_dict()
        if keep_iou_head:
            own_head = {key: value for key, value in expected.items() if key.startswith(IOU_HEAD_KEYS)}
            state = {**{key: value for key, value in state.items() if not key.startswith(IOU_HEAD_KEYS)}, **own_head}
        problems = [f"missing {key}" for key in expected if key not in state]
        problems += [f"unexpected {key}" for key in state if key not in expected]
        problems += [f"{key} has shape {list(state[key].shape)}, the model {list(tensor.shape)}"
                     for key, tensor in expected.items() if key in state and state[key].shape != tensor.shape]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ValueError(f"the weights do not fit the model: {'; '.join(problems[:3])}{more}")
        self.load_state_dict(state, strict=False)

    def preprocess(self, images: list[torch.Tensor]) -> torch.Tensor:
        """uint8 RGB images (3, H_i, W_i) -> normalised batch (B, 3, H, W), zero-padded to a multiple of 32.

        Padding comes after normalisation, so padded pixels are 0 as in the reference.
        """
        device = self.clip.pixel_mean.device
        height = _round_up(max(image.shape[-2] for image in images))
        width = _round_up(max(image.shape[-1] for image in images))
        batch = torch.zeros(len(images), 3, height, width, device=device)
        for i, image in enumerate(images):
            normalised = (image.to(device, torch.float32) - self.clip.pixel_mean) / self.clip.pixel_std
            batch[i, :, : image.shape[-2], : image.shape[-1]] = normalised
        return batch

    def forward(self, images: torch.Tensor, with_aux: bool | None = None, bf16: bool = False) -> dict:
        """Normalised, padded images (B, 3, H, W) -> decoder outputs (see QueryDecoder) + `clip_dense`.

        `clip_dense` is the frozen CLIP's dense map (B, C_clip, H/s, W/s), s = `clip.dense_stride` (32 unless
        set), used for classification.
        `bf16`: the whole network runs under bfloat16 autocast, the pixel decoder included (an inference
        option; training AMP keeps the pixel decoder in float32); the outputs are float32.
        """
        with torch.autocast(images.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            features = self.clip.features(images)
            mask_features, multi_scale = self.pixel_decoder(features, bf16=bf16)
            outputs = self.decoder(multi_scale, mask_features, with_aux=with_aux)
        outputs["clip_dense"] = features["clip_dense"]
        if bf16:
            outputs = {key: value.float() if torch.is_tensor(value) else value for key, value in outputs.items()}
        return outputs

    def infer(self, images: torch.Tensor, bf16: bool = False, compiled: bool = False,
              onednn_linear: bool = True) -> dict:
        """`forward` without auxiliary outputs, for inference (call it without gradients).

        `compiled`: through torch.compile (inductor; a graph per input size, compiled on its first frame:
        a minute or more on 2 CPU cores, then about a sixth faster per frame on CPU; the outputs move by
        float rounding). Where compiling fails (no C compiler, say), a warning says why and this model
        runs eagerly from then on. `onednn_linear`: float32 linear layers on CPU run through oneDNN
        (`clipvis.model.onednn_linear`; eager only: inductor takes oneDNN's linear op only for weights it
        has frozen into the graph). A ResNet CLIP trunk runs channels-last from the first call on
        (`FrozenCLIP.use_channels_last`).
        """
        self.clip.use_channels_last()
        if compiled and self._compiled_forward is None:
            # The class's function, called with this model: a copy of the model calls it with the copy.
            self._compiled_forward = torch.compile(type(self).forward, dynamic=False)
        if compiled and self._compiled_forward != EAGER:
            try:
                return self._compiled_forward(self, images, with_aux=False, bf16=bf16)
            except torch._dynamo.exc.BackendCompilerFailed as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                log.warning("torch.compile failed, the network runs eagerly: %s", reason)
                self._compiled_forward = EAGER
        with OneDNNLinears() if onednn_linear and onednn_available() else contextlib.nullcontext():
            return self(images, with_aux=False, bf16=bf16)

    def class_logits(self, clip_dense: torch.Tensor, mask_logits: torch.Tensor, text: TextEmbeddings) -> torch.Tensor:
        """CLIP class logits (B, Q, C) of each query's mask; queries with no CLIP embedding get 0 (uniform)."""
        embeddings, valid = self.clip.pool_masks(clip_dense, mask_logits)
        return classification_logits(embeddings, text.embeddings.to(embeddings.device), text.synonym_class,
                                     text.num_classes, self.clip.logit_scale, valid)


GROUP_NORM_GROUPS = 32  # the pixel decoder's GroupNorm


def check_model_config(model: ModelConfig) -> None:
    """Shapes the network cannot be built with are config errors naming the key, before anything is built."""
    checks = [
        ("hidden_dim", model.hidden_dim > 0 and model.hidden_dim % GROUP_NORM_GROUPS == 0,
         f"must be a positive multiple of {GROUP_NORM_GROUPS} (the pixel decoder's GroupNorm groups)"),
        ("heads", model.heads > 0 and model.hidden_dim % model.heads == 0,
         f"must divide model.hidden_dim ({model.hidden_dim})"),
        ("dec_layers", model.dec_layers >= 1, "must be at least 1 (it counts prediction sets: layers + 1)"),
        ("enc_layers", model.enc_layers >= 0, "must be 0 or more"),
    ]
    checks += [(key, getattr(model, key) >= 1, "must be at least 1")
               for key in ("num_queries", "dec_ffn_dim", "enc_ffn_dim", "enc_points", "mask_dim")]
    for key, ok, problem in checks:
        if not ok:
            raise InputError("config", f"model.{key}", f"{problem}, got {getattr(model, key)!r}")


def _round_up(size: int) -> int:
    return -(-size // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY


def pad_target_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, h, w) masks -> (N, height, width) zero-padded at the bottom and right."""
    return F.pad(masks, (0, width - masks.shape[-1], 0, height - masks.shape[-2]))
