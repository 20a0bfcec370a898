"""Contrastive pretraining of the toy CLIP on the toy image–caption pairs, and its zero-shot accuracy.

    checkpoint = pretrain_clip(cfg)          # cfg.clip_pretrain.out (+ .json with accuracy and time)
    clip = FrozenCLIP(cfg.clip.model, pretrained=str(checkpoint))

The model is the open_clip model `cfg.clip.model` with random initial weights, trained with the
symmetric InfoNCE loss on the "train" pairs of every category (as real CLIP saw the web). Each draw of
an image is either the whole image with its caption or, with probability `crop_probability`, a crop
around one of its objects with a class prompt of that object: the pipeline classifies objects, not
scenes, and a toy shape squeezed into a whole 64-pixel image is too small to learn. Views that show
the same categories count as matches of each other's texts. The checkpoint is the model's state_dict,
which open_clip (and so FrozenCLIP) loads like real weights. Zero-shot accuracy is measured over the
whole vocabulary (base and novel) on crops around the objects of the "heldout" single-object images,
and on those images whole.

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
from clipvis.data.registry import get_benchmark, resolve_root
from clipvis.data.vocabularies import categories, novel_ids
from clipvis.errors import InputError
from clipvis.files import atomic_path, read_json, write_json
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
CROP_CONTEXT = (1.1, 1.8)  # a training crop's side over its object's longer side, drawn uniformly
CROP_SHIFT = 0.1  # a training crop's centre moves up to this fraction of its side off the object's centre
HELDOUT_CONTEXT = 1.4  # the evaluation crops: centred, the middle of the training range


@dataclass
class CaptionPairs:
    """Images with their captions and the categories they show."""

    images: torch.Tensor  # (N, 3, H, W) uint8 RGB
    captions: list[str]
    category_ids: list[list[int]]
    boxes: list[list[list[float]]]  # per image, per category id: where it shows, [x, y, w, h] in pixels


def load_caption_pairs(root: str | Path, split: str) -> CaptionPairs:
    """The "train" or "heldout" pairs of the toy caption set under the data root."""
    benchmark = get_benchmark(CAPTIONS)
    path = benchmark.annotation_path(root)
    if not path.is_file():
        raise InputError(path, "", "file not found; run `clipvis data --benchmark toy` to write the toy world")
    items = read_json(path).get("items")
    if not isinstance(items, list):
        raise InputError(path, "items", "expected a list of image-caption items")
    images, captions, category_ids, boxes = [], [], [], []
    for index, item in enumerate(items):
        try:
            if item["split"] != split:
                continue
            image_path = benchmark.image_path(root) / item["file_name"]
            captions.append(str(item["caption"]))
            category_ids.append([int(i) for i in item["category_ids"]])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(path, f"items[{index}]", f"bad item ({e!r})") from None
        boxes.append(read_boxes(item, len(category_ids[-1]), path, f"items[{index}].boxes"))
        try:
            with Image.open(image_path) as image:
                images.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
        except OSError as e:
            raise InputError(image_path, "", f"cannot read image ({e})") from None
    if not images:
        raise InputError(path, "items", f"no items with split {split!r}")
    if len({tuple(image.shape) for image in images}) > 1:
        raise InputError(path, "items", "the images differ in size; the toy caption images all have one size")
    return CaptionPairs(torch.stack(images), captions, category_ids, boxes)


def read_boxes(item: dict, count: int, path: Path, field: str) -> list[list[float]]:
    """An item's `count` boxes, each [x, y, w, h] with w, h > 0."""
    if "boxes" not in item:
        raise InputError(path, field,
                         "missing; this toy world predates object boxes: run `clipvis data --benchmark toy`")
    boxes = item["boxes"]
    if not isinstance(boxes, list) or len(boxes) != count:
        raise InputError(path, field, f"expected a list of {count} boxes, one per category id")
    for box in boxes:
        if (not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box)
                or box[2] <= 0 or box[3] <= 0):
            raise InputError(path, field, f"bad box {box!r}: expected [x, y, w, h] with w, h > 0")
    return [[float(v) for v in box] for box in boxes]


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float, minus `mean`, over `std` (both (3, 1, 1), 0-255 scale)."""
    return (images.float() - mean) / std


def preprocess_cfg_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The CLIP normalisation of an open_clip model, as (3, 1, 1) tensors on the 0-255 scale."""
    preprocess = model.visual.preprocess_cfg
    return (torch.tensor(preprocess["mean"]).view(3, 1, 1) * 255,
            torch.tensor(preprocess["std"]).view(3, 1, 1) * 255)


def image_size(model: nn.Module) -> int:
    """The square input size of the model's image tower (its attention pool is built for it).

    open_clip gives an int for its own towers and an (H, W) pair for timm towers.
    """
    size = model.visual.preprocess_cfg["size"]
    return int(size if isinstance(size, int) else size[0])


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, size, size) uint8: the whole image, squeezed to a square."""
    return v2.functional.resize(images, [size, size], antialias=True)


def object_crop(image: torch.Tensor, box: list[float], context: float, shift: tuple[float, float],
                size: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, size, size) uint8: the square around `box` ([x, y, w, h]).

    Its side is `context` times the box's longer side; its centre is the box's, moved by `shift`
    (dx, dy) times the side. Pixels outside the image are zero.
    """
    x, y, w, h = box
    side = context * max(w, h)
    left = round(x + w / 2 + shift[0] * side - side / 2)
    top = round(y + h / 2 + shift[1] * side - side / 2)
    extent = max(1, round(side))
    return v2.functional.resized_crop(image, top, left, extent, extent, [size, size], antialias=True)


def heldout_crops(pairs: CaptionPairs, size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8: each image's first object, centred, HELDOUT_CONTEXT times its size."""
    return torch.stack([object_crop(image, boxes[0], HELDOUT_CONTEXT, (0.0, 0.0), size)
                        for image, boxes in zip(pairs.images, pairs.boxes)])


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


class ViewSampler:
    """Training views of caption images: whole with a caption, or an object crop with a class prompt."""

    def __init__(self, pairs: CaptionPairs, names_by_id: dict[int, str], crop_probability: float, size: int):
        self.pairs, self.names_by_id, self.crop_probability, self.size = pairs, names_by_id, crop_probability, size
        self.wholes = resize_square(pairs.images, size)  # (N, 3, size, size), resized once
        self.texts = image_texts(pairs, names_by_id)

    def draw(self, index: int) -> tuple[torch.Tensor, str, list[int]]:
        """A random view of image `index`: (3, size, size) uint8, its text, the category ids it shows.

        Crops: a random one of the image's categories, CROP_CONTEXT and CROP_SHIFT drawn uniformly,
        paired with a random class prompt. Both kinds are then flipped and turned (`flip_and_turn`).
        """
        if self.crop_probability > 0 and float(torch.rand(())) < self.crop_probability:
            pick = int(torch.randint(len(self.pairs.category_ids[index]), ()))
            context = float(torch.empty(()).uniform_(*CROP_CONTEXT))
            shift = ((torch.rand(2) * 2 - 1) * CROP_SHIFT).tolist()
            view = object_crop(self.pairs.images[index], self.pairs.boxes[index][pick], context, shift, self.size)
            category = self.pairs.category_ids[index][pick]
            template = TEMPLATES[int(torch.randint(len(TEMPLATES), ()))]
            return flip_and_turn(view), template.format(self.names_by_id[category]), [category]
        return flip_and_turn(self.wholes[index]), draw_text(self.texts[index]), self.pairs.category_ids[index]


def train_clip(model_name: str, pairs: CaptionPairs, names_by_id: dict[int, str], epochs: int, batch_size: int,
               lr: float, weight_decay: float, crop_probability: float,
               log_epoch: Callable[[dict[str, float], int], None] | None = None) -> tuple[nn.Module, list[float]]:
    """A new open_clip `model_name` trained with the symmetric InfoNCE loss; returns it (in eval mode)
    and the loss of every step.

    Each image is drawn once per epoch as one view (`ViewSampler`): with probability `crop_probability`
    an object crop and a class prompt, otherwise the whole image and its caption or (with probability
    TEXT_VARIANT_PROBABILITY, single-category images) a class prompt. Within a batch, views that show
    the same categories count as matches of each other's texts (`contrastive_loss`). Whole images keep
    every pixel (flips and quarter turns only): a caption names all their objects. No colour changes,
    since colour is part of every class.

    AdamW (no weight decay on biases, norms and the temperature), linear warm-up then cosine decay.
    Initial weights, batches and views come from torch's global random generator: seed it for a
    repeatable run. `log_epoch(metrics, epoch)` receives the epoch's mean loss, the learning rate and
    the temperature.
    """
    model = create_clip(model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    mean, std = preprocess_cfg_stats(model)
    sampler = ViewSampler(pairs, names_by_id, crop_probability, image_size(model))
    steps_per_epoch = len(pairs.images) // batch_size
    if steps_per_epoch == 0:
        raise InputError("clip_pretrain.batch_size", "", f"larger than the {len(pairs.images)} training pairs")
    total_steps = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps))
    model.train()
    losses = []
    progress = tqdm(total=total_steps, desc="pretrain CLIP", unit="step")
    for epoch in range(epochs):
        order = torch.randperm(len(pairs.images))
        for step in range(steps_per_epoch):
            batch = order[step * batch_size:(step + 1) * batch_size].tolist()
            views, texts, shown = zip(*(sampler.draw(i) for i in batch))
            image_features, text_features, scale = model(normalise(torch.stack(views), mean, std), tokenizer(texts))
            loss = contrastive_loss(image_features, text_features, scale, content_groups(shown))
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
    base and novel on held-out object crops and on the whole held-out images, training time) and the
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
                                   settings.lr, settings.weight_decay, settings.crop_probability,
                                   log_epoch=mlflow.log_metrics)
        train_seconds = time.perf_counter() - start
        save_checkpoint(model, out)

        clip = FrozenCLIP(cfg.clip.model, pretrained=str(out))
        groups = {"overall": torch.ones_like(is_novel), "base": ~is_novel, "novel": is_novel}
        crops = heldout_crops(heldout, image_size(clip.clip))
        top1, top1_whole = ({group: zero_shot_accuracy(clip, images[chosen], labels[chosen], class_names)
                             for group, chosen in groups.items() if chosen.any()}
                            for images in (crops, heldout.images))
        report = {"model": cfg.clip.model, "checkpoint": out.name, "zero_shot_top1": top1,
                  "zero_shot_top1_whole_image": top1_whole, "train_seconds": round(train_seconds, 1),
                  "steps": len(losses), "final_loss": losses[-1], "train_pairs": len(train_pairs.captions),
                  "heldout_images": len(labels)}
        write_json(out.with_suffix(".json"), report, indent=2)
        mlflow.log_metrics({f"zero_shot_top1_{group}": value for group, value in top1.items()}
                           | {f"zero_shot_top1_whole_image_{group}": value for group, value in top1_whole.items()}
                           | {"train_seconds": train_seconds})
        mlflow.log_artifact(str(out.with_suffix(".json")))
    log.info("toy CLIP saved to %s: zero-shot top-1 on object crops %s, on whole images %s, in %.0f s", out,
             json.dumps(top1), json.dumps(top1_whole), train_seconds)
    return out
