"""Contrastive pretraining of the toy CLIP on the toy image–caption pairs, and its zero-shot accuracy.

    checkpoint = pretrain_clip(cfg)          # cfg.clip_pretrain.out (+ .json with accuracy and time)
    clip = FrozenCLIP(cfg.clip.model, pretrained=str(checkpoint))

The model is the open_clip model `cfg.clip.model` with random initial weights, trained with the
symmetric InfoNCE loss on the "train" pairs of every category (as real CLIP saw the web); images
that show the same categories count as matches of each other's texts, and single-category images
are also paired with the 14 class prompts. The checkpoint is the model's state_dict, which
open_clip (and so FrozenCLIP) loads like real weights. Zero-shot accuracy is measured on the
"heldout" single-object images, over the whole vocabulary (base and novel).

Runs are repeatable for a given seed and thread count. On a CPU shared with other work, one thread
(OMP_NUM_THREADS=1) can be several times faster than two: the tiny model runs many tiny operations.
"""

from __future__ import annotations

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
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from clipvis.config import Config, save_config
from clipvis.data.benchmarks import get_benchmark, resolve_root
from clipvis.data.vocabularies import categories, novel_ids
from clipvis.errors import InputError
from clipvis.io import atomic_path, read_json, write_json
from clipvis.model.clip_encoder import FrozenCLIP
from clipvis.model.text_classifier import TEMPLATES, class_text_embeddings, classification_logits
from clipvis.tracking import stage_run

log = logging.getLogger(__name__)

CAPTIONS = "toy_captions"
SPLIT_BENCHMARK = "toy_lvvis"  # a toy benchmark with the base/novel split (all toy sets share the vocabulary)
WARMUP_FRACTION = 0.05
MAX_LOGIT_SCALE = math.log(100.0)
EVAL_BATCH = 256
TEXT_VARIANT_PROBABILITY = 0.5  # how often a single-category image is paired with a class prompt, not its caption


@dataclass
class CaptionPairs:
    """Images with their captions and the categories they show."""

    images: torch.Tensor  # (N, 3, H, W) uint8 RGB
    captions: list[str]
    category_ids: list[list[int]]


def load_caption_pairs(root: str | Path, split: str) -> CaptionPairs:
    """The "train" or "heldout" pairs of the toy caption set under the data root."""
    benchmark = get_benchmark(CAPTIONS)
    path = benchmark.annotation_path(root)
    if not path.is_file():
        raise InputError(path, "", "file not found; run `clipvis data --benchmark toy` to write the toy world")
    items = read_json(path).get("items")
    if not isinstance(items, list):
        raise InputError(path, "items", "expected a list of image-caption items")
    images, captions, category_ids = [], [], []
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
    if not images:
        raise InputError(path, "items", f"no items with split {split!r}")
    if len({tuple(image.shape) for image in images}) > 1:
        raise InputError(path, "items", "the images differ in size; the toy caption images all have one size")
    return CaptionPairs(torch.stack(images), captions, category_ids)


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float, minus `mean`, over `std` (both (3, 1, 1), 0-255 scale)."""
    return (images.float() - mean) / std


def preprocess_cfg_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The CLIP normalisation of an open_clip model, as (3, 1, 1) tensors on the 0-255 scale."""
    preprocess = model.visual.preprocess_cfg
    return (torch.tensor(preprocess["mean"]).view(3, 1, 1) * 255,
            torch.tensor(preprocess["std"]).view(3, 1, 1) * 255)


def image_size(model: nn.Module) -> int:
    """The square input size of the model's image tower (its attention pool is built for it)."""
    return int(model.visual.preprocess_cfg["size"])


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, size, size) uint8: the whole image, squeezed to a square."""
    return v2.functional.resize(images, [size, size], antialias=True)


@torch.no_grad()
def zero_shot_accuracy(clip: FrozenCLIP, images: torch.Tensor, labels: torch.Tensor,
                       class_names: list[str]) -> float:
    """Top-1 accuracy of CLIP's zero-shot classification over all of `class_names`.

    images: (N >= 1, 3, H, W) uint8, each resized whole to the CLIP input size and encoded by the full
    image tower (with its pooling head); labels: (N,) class indices. Classes are scored with the
    14-template text embeddings (`class_text_embeddings`) and `classification_logits`.
    """
    text = class_text_embeddings(clip, class_names)
    size = image_size(clip.clip)
    predictions = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = normalise(resize_square(images[start:start + EVAL_BATCH], size), clip.pixel_mean, clip.pixel_std)
        visual = clip.clip.encode_image(batch.to(clip.pixel_mean.device))  # (B, D)
        logits = classification_logits(visual, text.embeddings, text.synonym_class, text.num_classes,
                                       clip.logit_scale)
        predictions.append(logits.argmax(-1).cpu())
    return float((torch.cat(predictions) == labels).float().mean())


def create_clip(model_name: str) -> nn.Module:
    """A trainable open_clip model with random weights (from torch's global random generator)."""
    if model_name not in open_clip.list_models():
        raise InputError("clip.model", model_name, "unknown open_clip model name")
    return open_clip.create_model(model_name)


def train_clip(model_name: str, images: torch.Tensor, texts: list[list[str]], groups: torch.Tensor, epochs: int,
               batch_size: int, lr: float, weight_decay: float,
               log_epoch: Callable[[dict[str, float], int], None] | None = None) -> tuple[nn.Module, list[float]]:
    """A new open_clip `model_name` trained with the symmetric InfoNCE loss; returns it (in eval mode)
    and the loss of every step.

    images: (N, 3, H, W) uint8; texts[i]: the texts that describe image i, its caption first. Each
    time an image is drawn, it is paired with its caption or (with probability TEXT_VARIANT_PROBABILITY)
    one of its other texts. groups: (N,) ints, equal for images that show the same thing: within a
    batch their texts all count as matches (`contrastive_loss`).

    AdamW (no weight decay on biases, norms and the temperature), linear warm-up then cosine decay,
    whole images (resized once to the input size) with random flips and quarter turns: no crops, which
    cut away objects that the caption names, and no colour changes, since colour is part of every class.
    Initial weights, batches and augmentations come from torch's global random generator: seed it
    for a repeatable run. `log_epoch(metrics, epoch)` receives the epoch's mean loss, the learning
    rate and the temperature.
    """
    model = create_clip(model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    size = image_size(model)
    mean, std = preprocess_cfg_stats(model)
    images = resize_square(images, size)  # (N, 3, size, size)
    steps_per_epoch = len(images) // batch_size
    if steps_per_epoch == 0:
        raise InputError("clip_pretrain.batch_size", "", f"larger than the {len(images)} training pairs")
    total_steps = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps))
    model.train()
    losses = []
    progress = tqdm(total=total_steps, desc="pretrain CLIP", unit="step")
    for epoch in range(epochs):
        order = torch.randperm(len(images))
        for step in range(steps_per_epoch):
            batch = order[step * batch_size:(step + 1) * batch_size].tolist()
            pixels = normalise(torch.stack([flip_and_turn(images[i]) for i in batch]), mean, std)
            tokens = tokenizer([draw_text(texts[i]) for i in batch])  # (B, context_length)
            image_features, text_features, scale = model(pixels, tokens)
            loss = contrastive_loss(image_features, text_features, scale, groups[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            losses.append(loss.item())
            progress.update()
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
        if log_epoch is not None:
            log_epoch({"loss": float(np.mean(losses[-steps_per_epoch:])), "lr": scheduler.get_last_lr()[0],
                       "logit_scale": model.logit_scale.exp().item()}, epoch + 1)
    progress.close()
    return model.eval(), losses


def random_quarter_turn(image: torch.Tensor) -> torch.Tensor:
    """(3, S, S) -> the same turned by a random multiple of 90 degrees (toy shapes lie at any angle)."""
    return image.rot90(int(torch.randint(4, ())), dims=(-2, -1))


# (3, S, S) -> the same, mirrored with probability 1/2, then turned: every pixel is kept
flip_and_turn = v2.Compose([v2.RandomHorizontalFlip(), random_quarter_turn])


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
    base and novel, training time) and the resolved config (`<name>.config.yaml`). Returns the
    checkpoint path.
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
        model, losses = train_clip(cfg.clip.model, train_pairs.images, image_texts(train_pairs, names_by_id),
                                   content_groups(train_pairs.category_ids), settings.epochs, settings.batch_size,
                                   settings.lr, settings.weight_decay, log_epoch=mlflow.log_metrics)
        train_seconds = time.perf_counter() - start
        save_checkpoint(model, out)

        clip = FrozenCLIP(cfg.clip.model, pretrained=str(out))
        groups = {"overall": torch.ones_like(is_novel), "base": ~is_novel, "novel": is_novel}
        top1 = {group: zero_shot_accuracy(clip, heldout.images[chosen], labels[chosen], class_names)
                for group, chosen in groups.items() if chosen.any()}
        report = {"model": cfg.clip.model, "checkpoint": out.name, "zero_shot_top1": top1,
                  "train_seconds": round(train_seconds, 1), "steps": len(losses), "final_loss": losses[-1],
                  "train_pairs": len(train_pairs.captions), "heldout_images": len(labels)}
        write_json(out.with_suffix(".json"), report, indent=2)
        mlflow.log_metrics({f"zero_shot_top1_{group}": value for group, value in top1.items()}
                           | {"train_seconds": train_seconds})
        mlflow.log_artifact(str(out.with_suffix(".json")))
    log.info("toy CLIP saved to %s: zero-shot top-1 %s in %.0f s", out, json.dumps(top1), train_seconds)
    return out
