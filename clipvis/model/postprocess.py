"""What the network's outputs go through at test time, frame by frame: the test resize of a frame, masks
back to the original resolution, their compressed RLE, and the mask-score terms (docs/method.md §7.1,
§7.8–7.10)."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, ContextManager

import numpy as np
import pycocotools.mask as mask_api
import torch
import torch.nn.functional as F
from PIL import Image

from clipvis.data.augmentation import resize, shortest_edge_size
from clipvis.errors import InputError

MASK_SCORE_EPS = 1e-6
UPSAMPLE_QUERIES = 16  # masks upsampled to the original resolution at once


def resize_for_inference(frame: torch.Tensor, min_size: int, max_size: int, method: str = "pil") -> torch.Tensor:
    """ResizeShortestEdge: short side `min_size`, long side at most `max_size`, bilinear;
    (3, H, W) uint8 -> (3, h, w) uint8.

    method "pil": PIL's bilinear (it widens its filter when shrinking), exactly as detectron2 resizes
    test frames; "torch": torch's antialiased bilinear, within a couple of grey levels of PIL's.
    """
    height, width = shortest_edge_size(*frame.shape[-2:], min_size, max_size)
    if (height, width) == tuple(frame.shape[-2:]):
        return frame
    if method == "pil":
        image = Image.fromarray(frame.permute(1, 2, 0).cpu().numpy())
        resized = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
        return torch.from_numpy(resized.copy()).permute(2, 0, 1).contiguous()
    if method == "torch":
        no_masks = torch.zeros((0, *frame.shape[-2:]), dtype=torch.bool)
        return resize(frame, no_masks, height, width)[0]
    raise InputError("config", "infer.resize", f"must be 'pil' or 'torch', got {method!r}")


def encode_frame_masks(mask_logits: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int],
                       output_size: tuple[int, int], timer: Callable[[str], ContextManager] | None = None) -> list[str]:
    """(Q, Hp/4, Wp/4) mask logits of a frame -> per query, RLE counts of its mask at the original resolution.

    A mask with no positive logit is empty at every resolution (bilinear weights are convex), so it is
    not upsampled. `timer(name)` (if given) times the "upsample" and "rle" parts.
    """
    timer = timer or _untimed
    counts = [empty_rle(output_size)] * len(mask_logits)
    nonempty = (mask_logits.flatten(1).amax(1) > 0).nonzero()[:, 0].tolist()
    for start in range(0, len(nonempty), UPSAMPLE_QUERIES):
        rows = nonempty[start:start + UPSAMPLE_QUERIES]
        with timer("upsample"):
            masks = masks_to_original(mask_logits[rows], padded_size, image_size, output_size)
        with timer("rle"):
            for row, rle in zip(rows, encode_masks(masks)):
                counts[row] = rle
    return counts


def _untimed(name: str) -> ContextManager:
    return contextlib.nullcontext()


@functools.cache
def empty_rle(size: tuple[int, int]) -> str:
    """RLE counts of an empty mask of `size` (height, width)."""
    return encode_masks(torch.zeros(1, *size, dtype=torch.bool))[0]


def mask_score_terms(mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., h, w) logits -> Σ sigmoid(logit) over pixels with logit > 0 (float64), and their count (int64)."""
    positive = mask_logits > 0
    sums = (mask_logits.float().sigmoid() * positive).sum((-2, -1), dtype=torch.float64)
    return sums, positive.sum((-2, -1))


def masks_to_original(mask_logits: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int],
                      output_size: tuple[int, int]) -> torch.Tensor:
    """(N, Hp/4, Wp/4) logits -> (N, H, W) bool at the original size (docs/method.md §7.10): bilinear to
    the padded input, crop to the resized frame, bilinear to the original size, logit > 0.

    Resizing to the same size is the identity (weights 1 and 0), so that step is skipped when the frame
    was not resized. The masks are stored column by column (a transposed view), the order RLE reads.
    """
    x = F.interpolate(mask_logits[None].float(), size=padded_size, mode="bilinear", align_corners=False)
    x = x[..., : image_size[0], : image_size[1]]
    if tuple(output_size) != tuple(image_size):
        x = F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)
    columns = torch.empty(x.shape[1], x.shape[3], x.shape[2], dtype=torch.bool, device=x.device)  # (N, W, H)
    torch.gt(x[0].transpose(1, 2), 0, out=columns)
    return columns.transpose(1, 2)


def encode_masks(masks: torch.Tensor) -> list[str]:
    """(N, H, W) bool -> compressed COCO RLE counts strings (no copy when stored column by column)."""
    columns = masks.transpose(1, 2).contiguous().cpu()  # (N, W, H)
    array = columns.numpy().view(np.uint8).transpose(2, 1, 0)  # (H, W, N) in Fortran order, as pycocotools wants
    return [rle["counts"].decode("ascii") for rle in mask_api.encode(array)]
