"""Pretraining of the toy CLIP on the toy image–caption pairs, and its zero-shot accuracy.

    checkpoint = pretrain_clip(cfg)          # cfg.clip_pretrain.out (+ .json with accuracy and time)
    clip = FrozenCLIP(cfg.clip.model, pretrained=str(checkpoint), dense_stride=cfg.clip.dense_stride)

The model is the open_clip model `cfg.clip.model` with random initial weights, trained on the "train"
pairs of every category (as real CLIP saw the web) with two losses, both through the path the
segmenter uses to classify (the dense map at `clip.dense_stride`, then the pooling head restricted to a region,
`pool_regions`), on whole images at their own size:
- caption loss: the symmetric InfoNCE loss between whole images (the pooling head over every position)
  and their captions; images that show the same categories count as matches of each other's texts;
- region loss: each object's region, pooled as inference pools a ground-truth mask, is classified
  against a class prompt of every category (cross-entropy), as in region-text pretraining; weighted by
  `clip_pretrain.region_weight` against the caption loss.
After `clip_pretrain.epochs` of the whole model, `clip_pretrain.head_epochs` more train only what the
segmenter never reads (the pooling head, the text tower), the region loss weighted
`clip_pretrain.head_region_weight`: classification learns more while the trunk, the segmenter's frozen
backbone, stays as it was (weighting the region loss from the start made a better classifier but a worse
trunk: README, the toy experiment's limits, column K).
Without the region loss the dense map is never trained for what inference asks of it: a CLIP trained
on whole images (or object crops) alone classified under a fifth of the objects right by mask pooling.
The checkpoint is the model's state_dict, which open_clip (and so FrozenCLIP) loads like real weights.
Zero-shot accuracy is measured over the whole vocabulary (base and novel) on the "heldout"
single-object images: by pooling the ground-truth mask, and by pooling the whole image.

Runs are repeatable for a given seed and thread count.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import pycocotools.mask as mask_api
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from clipvis.config import Config, save_config
from clipvis.data.registry import get_benchmark, resolve_root
from clipvis.data.vocabularies import categories, novel_ids
from clipvis.errors import InputError
from clipvis.files import atomic_path, read_json, write_json
from clipvis.model.clip_encoder import (FrozenCLIP, binarise_masks, check_dense_stride, cover_logits, pool_regions,
                                        pooling_head, trunk_family, trunk_features)
from clipvis.model.text_classifier import TEMPLATES, class_text_embeddings, classification_logits
from clipvis.tracking import stage_run

log = logging.getLogger(__name__)

CAPTIONS = "toy_captions"
SPLIT_BENCHMARK = "toy_lvvis"  # a toy benchmark with the base/novel split (all toy sets share the vocabulary)
WARMUP_FRACTION = 0.05
MAX_LOGIT_SCALE = math.log(100.0)
EVAL_BATCH = 64
TEXT_VARIANT_PROBABILITY = 0.5  # how often a single-category image is paired with a class prompt, not its caption
STRIDE = 32  # images are zero-padded (after normalisation) to a multiple of the trunk's stride, as inference pads


@dataclass
class CaptionPairs:
    """Images with their captions, the categories they show and where."""

    images: torch.Tensor  # (N, 3, H, W) uint8 RGB
    captions: list[str]
    category_ids: list[list[int]]
    masks: list[torch.Tensor]  # per image (len(category_ids), H, W) bool: each category's visible pixels


def load_caption_pairs(root: str | Path, split: str) -> CaptionPairs:
    """The "train" or "heldout" pairs of the toy caption set under the data root."""
    benchmark = get_benchmark(CAPTIONS)
    path = benchmark.annotation_path(root)
    if not path.is_file():
        raise InputError(path, "", "file not found; run `clipvis data --benchmark toy` to write the toy world")
    items = read_json(path).get("items")
    if not isinstance(items, list):
        raise InputError(path, "items", "expected a list of image-caption items")
    images, captions, category_ids, masks = [], [], [], []
    for index, item in enumerate(items):
        try:
            if item["split"] != split:
                continue
            image_path = benchmark.image_path(root) / item["file_name"]
            captions.append(str(item["caption"]))
            category_ids.append([int(i) for i in item["category_ids"]])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(path, f"items[{index}]", f"bad item ({e!r})") from None
        try:
            with Image.open(image_path) as image:
                images.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
        except OSError as e:
            raise InputError(image_path, "", f"cannot read image ({e})") from None
        masks.append(read_masks(item, len(category_ids[-1]), tuple(images[-1].shape[-2:]), path,
                                f"items[{index}].segmentations"))
    if not images:
        raise InputError(path, "items", f"no items with split {split!r}")
    if len({tuple(image.shape) for image in images}) > 1:
        raise InputError(path, "items", "the images differ in size; the toy caption images all have one size")
    return CaptionPairs(torch.stack(images), captions, category_ids, masks)


def read_masks(item: dict, count: int, size: tuple[int, int], path: Path, field: str) -> torch.Tensor:
    """An item's `count` masks (count, H, W) bool from compressed RLEs of the image's `size`, none empty."""
    if "segmentations" not in item:
        raise InputError(path, field,
                         "missing; this toy world predates object masks: run `clipvis data --benchmark toy`")
    rles = item["segmentations"]
    if not isinstance(rles, list) or len(rles) != count:
        raise InputError(path, field, f"expected a list of {count} masks, one per category id")
    masks = []
    for k, rle in enumerate(rles):
        try:
            if tuple(rle["size"]) != size:
                raise ValueError(f"size {rle['size']} is not the image's {list(size)}")
            mask = mask_api.decode({"size": list(size), "counts": rle["counts"].encode("ascii")})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(path, f"{field}[{k}]", f"bad mask ({e})") from None
        if not mask.any():
            raise InputError(path, f"{field}[{k}]", "empty mask")
        masks.append(torch.from_numpy(mask.astype(bool)))
    return torch.stack(masks)


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float, minus `mean`, over `std` (both (3, 1, 1), 0-255 scale), then zero-padded
    at the bottom and right to a multiple of STRIDE."""
    height, width = images.shape[-2:]
    pad = (0, -width % STRIDE, 0, -height % STRIDE)
    return F.pad((images.float() - mean) / std, pad)


def preprocess_cfg_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The CLIP normalisation of an open_clip model, as (3, 1, 1) tensors on the 0-255 scale."""
    preprocess = model.visual.preprocess_cfg
    return (torch.tensor(preprocess["mean"]).view(3, 1, 1) * 255,
            torch.tensor(preprocess["std"]).view(3, 1, 1) * 255)


def region_masks(masks: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Ground-truth masks as inference sees them: per image (Q_i, H, W) bool, H and W multiples of 4 ->
    (B, max Q_i, h, w) bool on the dense map of `size` (cell cover at stride 4, resized, logit > 0, as
    `FrozenCLIP.pool_masks` binarises predicted masks); images with fewer masks are padded with empty ones."""
    most = max(len(m) for m in masks)
    logits = torch.full((len(masks), most, *cover_logits(masks[0]).shape[-2:]), -1.0)
    for i, m in enumerate(masks):
        logits[i, :len(m)] = cover_logits(m)
    return binarise_masks(logits, size)


def padded_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(Q, H, W) -> (Q, height, width), zero-padded at the bottom and right."""
    return F.pad(masks, (0, width - masks.shape[-1], 0, height - masks.shape[-2]))


@torch.no_grad()
def zero_shot_accuracy(clip: FrozenCLIP, images: torch.Tensor, masks: list[torch.Tensor], labels: torch.Tensor,
                       class_names: list[str]) -> float:
    """Top-1 accuracy of CLIP's zero-shot classification of mask regions over all of `class_names`.

    images: (N >= 1, 3, H, W) uint8; masks: per image (1, H, W) bool, the region to classify, pooled
    from the dense map as inference pools a mask (`FrozenCLIP.pool_masks`); labels: (N,) class indices.
    Classes are scored with the 14-template text embeddings (`class_text_embeddings`) and
    `classification_logits`; a mask that vanishes at the CLIP stride counts as wrong.
    """
    text = class_text_embeddings(clip, class_names)
    device = clip.pixel_mean.device
    correct = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = normalise(images[start:start + EVAL_BATCH].to(device), clip.pixel_mean, clip.pixel_std)
        dense = clip.features(batch)["clip_dense"]  # (B, C, h, w)
        chosen = [padded_masks(m, *batch.shape[-2:]) for m in masks[start:start + EVAL_BATCH]]
        embeddings, valid = pool_regions(clip.clip.visual, clip.family, dense, region_masks(chosen, dense.shape[-2:]))
        logits = classification_logits(embeddings[:, 0], text.embeddings, text.synonym_class, text.num_classes,
                                       clip.logit_scale)
        correct.append((logits.argmax(-1).cpu() == labels[start:start + EVAL_BATCH]) & valid[:, 0].cpu())
    return float(torch.cat(correct).float().mean())


def create_clip(model_name: str) -> nn.Module:
    """A trainable open_clip model with random weights (from torch's global random generator)."""
    if model_name not in open_clip.list_models():
        raise InputError("clip.model", model_name, "unknown open_clip model name")
    return open_clip.create_model(model_name)


def random_flips(image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) image and its (Q, H, W) masks, each mirrored left-right and upside down with probability 1/2.

    Nothing else: the pixels and their colours (part of every class) stay as they are."""
    for dim in (-1, -2):
        if float(torch.rand(())) < 0.5:
            image, masks = image.flip(dim), masks.flip(dim)
    return image, masks


def train_clip(model_name: str, pairs: CaptionPairs, names_by_id: dict[int, str], epochs: int, batch_size: int,
               lr: float, weight_decay: float, dense_stride: int = 32, region_weight: float = 1.0,
               head_epochs: int = 0, head_region_weight: float = 1.0,
               log_epoch: Callable[[dict[str, float], int], None] | None = None) -> tuple[nn.Module, list[float]]:
    """A new open_clip `model_name` trained with the caption and region losses (module docstring); returns it
    (in eval mode) and the loss of every step.

    Each step takes `batch_size` whole images (flipped at random, `random_flips`), their captions or (with
    probability TEXT_VARIANT_PROBABILITY, single-category images) a class prompt, and one class prompt of
    every category in a random template for the regions. AdamW (no weight decay on biases, norms and the
    temperature), linear warm-up then cosine decay. `epochs` train the whole model, the region loss weighted
    `region_weight`; then `head_epochs` (a schedule of their own) train only what the segmenter never reads
    (the pooling head, the text tower, the temperature), the trunk frozen in eval mode, the region loss
    weighted `head_region_weight`: the segmenter's features stay those of the first epochs, and only
    classification learns more. Initial weights, batches and flips come from torch's global random
    generator: seed it for a repeatable run. `log_epoch(metrics, epoch)` receives each epoch's mean losses,
    the learning rate and the temperature.
    """
    for key, value in (("region_weight", region_weight), ("head_epochs", head_epochs),
                       ("head_region_weight", head_region_weight)):
        if value < 0:
            raise InputError(f"clip_pretrain.{key}", "", f"must be 0 or more, got {value}")
    model = create_clip(model_name)
    family = trunk_family(model, model_name)
    check_dense_stride(dense_stride, family, model_name)
    phase = CaptionTraining(model, model_name, family, pairs, names_by_id, batch_size, dense_stride, log_epoch)
    if phase.steps_per_epoch == 0:
        raise InputError("clip_pretrain.batch_size", "", f"larger than the {len(pairs.images)} training pairs")
    with tqdm(total=(epochs + head_epochs) * phase.steps_per_epoch, desc="pretrain CLIP", unit="step") as progress:
        model.train()
        phase.run(epochs, lr, weight_decay, region_weight, progress)
        if head_epochs:
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(not name.startswith("visual."))
            model.visual.eval()  # batch-norm statistics stay too
            for module in pooling_head(model.visual, family):
                module.requires_grad_(True).train()
            phase.run(head_epochs, lr, weight_decay, head_region_weight, progress, trunk_frozen=True)
    return model.eval(), phase.losses


class CaptionTraining:
    """The training loop of `train_clip`, run once per phase; `losses` gathers every step's loss."""

    def __init__(self, model: nn.Module, model_name: str, family: str, pairs: CaptionPairs,
                 names_by_id: dict[int, str], batch_size: int, dense_stride: int,
                 log_epoch: Callable[[dict[str, float], int], None] | None):
        self.model, self.family, self.pairs, self.names_by_id = model, family, pairs, names_by_id
        self.batch_size, self.dense_stride, self.log_epoch = batch_size, dense_stride, log_epoch
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.mean, self.std = preprocess_cfg_stats(model)
        self.texts = image_texts(pairs, names_by_id)
        self.category_ids = sorted(names_by_id)
        self.label_of = {category_id: index for index, category_id in enumerate(self.category_ids)}
        self.steps_per_epoch = len(pairs.images) // batch_size
        self.losses: list[float] = []
        self.epochs_done = 0

    def run(self, epochs: int, lr: float, weight_decay: float, region_weight: float, progress: tqdm,
            trunk_frozen: bool = False) -> None:
        total_steps = epochs * self.steps_per_epoch
        optimizer = torch.optim.AdamW(parameter_groups(self.model, weight_decay), lr=lr, foreach=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps))
        parts = {"caption": [], "region": []}
        for _ in range(epochs):
            order = torch.randperm(len(self.pairs.images))
            for step in range(self.steps_per_epoch):
                batch = order[step * self.batch_size:(step + 1) * self.batch_size].tolist()
                caption, region = self.step_losses(batch, trunk_frozen)
                loss = caption + region_weight * region
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                self.losses.append(loss.item())
                parts["caption"].append(caption.item())
                parts["region"].append(region.item())
                progress.update()
                progress.set_postfix(caption=f"{caption.item():.3f}", region=f"{region.item():.3f}")
            self.epochs_done += 1
            if self.log_epoch is not None:
                last = self.steps_per_epoch
                self.log_epoch({"loss": float(np.mean(self.losses[-last:])),
                                **{f"loss_{name}": float(np.mean(values[-last:])) for name, values in parts.items()},
                                "lr": scheduler.get_last_lr()[0], "logit_scale": self.model.logit_scale.exp().item()},
                               self.epochs_done)

    def step_losses(self, batch: list[int], trunk_frozen: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The caption and region losses of the pairs `batch` (module docstring); a frozen trunk runs
        without gradients."""
        model, pairs = self.model, self.pairs
        images, masks = zip(*(random_flips(pairs.images[i], pairs.masks[i]) for i in batch))
        inputs = normalise(torch.stack(images), self.mean, self.std)
        with torch.no_grad() if trunk_frozen else contextlib.nullcontext():
            dense = trunk_features(model.visual, self.family, inputs, self.dense_stride)["clip_dense"]  # (B, C, h, w)
        chosen = [padded_masks(m, *inputs.shape[-2:]) for m in masks]
        regions, valid = pool_regions(model.visual, self.family, dense, region_masks(chosen, dense.shape[-2:]))
        wholes, _ = pool_regions(model.visual, self.family, dense,
                                 dense.new_ones(len(batch), 1, *dense.shape[-2:]).bool())
        template = TEMPLATES[int(torch.randint(len(TEMPLATES), ()))]
        prompts = [template.format(self.names_by_id[i]) for i in self.category_ids]
        text = F.normalize(model.encode_text(self.tokenizer([draw_text(self.texts[i]) for i in batch] + prompts)),
                           dim=-1)
        scale = model.logit_scale.exp()
        caption = contrastive_loss(F.normalize(wholes[:, 0], dim=-1), text[:len(batch)], scale,
                                   content_groups([pairs.category_ids[i] for i in batch]))
        labels = torch.tensor([[self.label_of[c] for c in pairs.category_ids[i]]
                               + [-1] * (regions.shape[1] - len(pairs.category_ids[i])) for i in batch])  # (B, Q), -1: none
        keep = valid & (labels >= 0)
        region = F.cross_entropy(scale * F.normalize(regions[keep], dim=-1) @ text[len(batch):].T, labels[keep])
        return caption, region


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor,
                     groups: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch where every text of the same group is a match.

    image_features, text_features: (B, D) unit rows; scale: exp(logit_scale); groups: (B,). With all
    groups distinct this is CLIP's loss; otherwise the target is uniform over an image's matches.
    """
    logits = scale * image_features @ text_features.T  # (B, B): image i, text j
    matches = (groups[:, None] == groups[None, :]).float()  # symmetric
    targets = matches / matches.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def draw_text(texts: list[str]) -> str:
    """The first text (the caption), or with probability TEXT_VARIANT_PROBABILITY one of the others."""
    if len(texts) > 1 and float(torch.rand(())) < TEXT_VARIANT_PROBABILITY:
        return texts[1 + int(torch.randint(len(texts) - 1, ()))]
    return texts[0]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and kernels only; none on biases, norm gains and the temperature."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up over the first steps, then cosine decay to zero."""
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


def image_texts(pairs: CaptionPairs, names_by_id: dict[int, str]) -> list[list[str]]:
    """For every image: its caption, then, if it shows one category, that category in every class prompt."""
    texts = []
    for caption, category_ids in zip(pairs.captions, pairs.category_ids):
        prompts = [template.format(names_by_id[category_ids[0]]) for template in TEMPLATES]
        texts.append([caption] + (prompts if len(category_ids) == 1 else []))
    return texts


def content_groups(category_ids: list[list[int]]) -> torch.Tensor:
    """(N,) group ids: images that show the same set of categories share one."""
    group_of: dict[frozenset[int], int] = {}
    return torch.tensor([group_of.setdefault(frozenset(ids), len(group_of)) for ids in category_ids])


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """The state_dict, written atomically: what open_clip's load_checkpoint (and FrozenCLIP) read."""
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def pretrain_clip(cfg: Config) -> Path:
    """Train the toy CLIP on the data root's caption pairs; write the checkpoint and its report.

    Writes `cfg.clip_pretrain.out`, a JSON beside it (same name, .json: zero-shot top-1 overall,
    base and novel on the held-out images, pooling their object's mask and pooling the whole image,
    training time) and the
    resolved config (`<name>.config.yaml`). Returns the checkpoint path.
    """
    settings = cfg.clip_pretrain
    out = Path(settings.out)
    root = resolve_root(None, cfg.data.root)
    records = categories(CAPTIONS, root)
    class_names = [record["name"] for record in records]
    index_of = {record["id"]: index for index, record in enumerate(records)}
    names_by_id = {record["id"]: record["name"] for record in records}
    novel = novel_ids(SPLIT_BENCHMARK, root)
    train_pairs = load_caption_pairs(root, "train")
    heldout = load_caption_pairs(root, "heldout")
    labels = torch.tensor([index_of[ids[0]] for ids in heldout.category_ids])
    is_novel = torch.tensor([ids[0] in novel for ids in heldout.category_ids], dtype=torch.bool)

    torch.manual_seed(settings.seed)
    log.info("pretraining %s on %d pairs (%d threads, load average %.1f)", cfg.clip.model,
             len(train_pairs.captions), torch.get_num_threads(), os.getloadavg()[0])
    save_config(cfg, out.with_suffix(".config.yaml"))
    with stage_run(cfg, "pretrain_clip") as mlflow:
        start = time.perf_counter()
        model, losses = train_clip(cfg.clip.model, train_pairs, names_by_id, settings.epochs, settings.batch_size,
                                   settings.lr, settings.weight_decay, cfg.clip.dense_stride, settings.region_weight,
                                   settings.head_epochs, settings.head_region_weight, log_epoch=mlflow.log_metrics)
        train_seconds = time.perf_counter() - start
        save_checkpoint(model, out)

        clip = FrozenCLIP(cfg.clip.model, pretrained=str(out), dense_stride=cfg.clip.dense_stride)
        groups = {"overall": torch.ones_like(is_novel), "base": ~is_novel, "novel": is_novel}
        wholes = [torch.ones_like(m[:1]) for m in heldout.masks]
        top1, top1_whole = ({group: zero_shot_accuracy(clip, heldout.images[chosen],
                                                       [masks[i] for i in chosen.nonzero()[:, 0].tolist()],
                                                       labels[chosen], class_names)
                             for group, chosen in groups.items() if chosen.any()}
                            for masks in (heldout.masks, wholes))
        report = {"model": cfg.clip.model, "checkpoint": out.name, "zero_shot_top1": top1,
                  "zero_shot_top1_whole_image": top1_whole, "train_seconds": round(train_seconds, 1),
                  "steps": len(losses), "final_loss": losses[-1], "train_pairs": len(train_pairs.captions),
                  "heldout_images": len(labels)}
        write_json(out.with_suffix(".json"), report, indent=2)
        mlflow.log_metrics({f"zero_shot_top1_{group}": value for group, value in top1.items()}
                           | {f"zero_shot_top1_whole_image_{group}": value for group, value in top1_whole.items()}
                           | {"train_seconds": train_seconds})
        mlflow.log_artifact(str(out.with_suffix(".json")))
    log.info("toy CLIP saved to %s: zero-shot top-1 pooling object masks %s, on whole images %s, in %.0f s", out,
             json.dumps(top1), json.dumps(top1_whole), train_seconds)
    return out
