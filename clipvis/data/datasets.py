"""Training datasets: LVIS/COCO images and single frames of YTVIS-style videos, as augmented samples.

A sample (what the training step consumes) is a dict::

    image          (3, H, W) uint8 RGB, after augmentation (normalising and padding are the model's job)
    masks          (N, H, W) bool, aligned with the image
    category_ids   (N,) int64, the annotation file's category ids (only repeat-factor sampling uses them)
    image_id                     for images
    video_id, frame_index        for video frames

`dataset.get(index, sample_seed)` draws every random choice (frame, flip, scale, crop) from a
generator seeded with `sample_seed`, so a sample is a pure function of its key; `dataset[(index,
sample_seed)]` is the same, which is what the samplers of `clipvis.data.samplers` yield.
Instances without pixels after augmentation are dropped.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pycocotools.mask as mask_api
import torch
import torch.utils.data
from PIL import Image, ImageOps

from clipvis.config import TrainConfig
from clipvis.data.augmentation import Augmentation, build_augmentation
from clipvis.data.registry import get_benchmark, missing_paths
from clipvis.data.formats import load_image_gt, load_video_gt
from clipvis.errors import InputError
from clipvis.files import relative_file_name

log = logging.getLogger(__name__)


class PackedRecords:
    """A read-only list of picklable records kept as one byte array.

    DataLoader workers forked from the trainer share it; a list of Python objects would be copied
    into every worker page by page as reference counts change (detectron2 serialises for the same reason).
    """

    def __init__(self, records: Iterable[Any]):
        blobs = [pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL) for record in records]
        self._ends = np.cumsum([len(blob) for blob in blobs], dtype=np.int64)  # [records] exclusive end offsets
        self._bytes = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Any:
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(self._bytes[start:int(self._ends[index])].tobytes())


def read_rgb(path: Path, height: int, width: int, listed_in: str | Path) -> torch.Tensor:
    """The image at `path` as (3, H, W) uint8 RGB, EXIF orientation applied; it must be height x width."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except FileNotFoundError:
        raise InputError(path, "", f"image not found (listed in {listed_in})") from None
    except OSError as error:
        raise InputError(path, "", f"cannot read the image ({error})") from None
    if image.size != (width, height):
        raise InputError(path, "", f"image is {image.size[1]}x{image.size[0]} (height x width), "
                                   f"{listed_in} says {height}x{width}")
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def decode_masks(counts: list[str], height: int, width: int) -> torch.Tensor:
    """(N, height, width) bool from compressed COCO RLE counts strings."""
    if not counts:
        return torch.zeros((0, height, width), dtype=torch.bool)
    stacked = mask_api.decode([{"size": [height, width], "counts": c} for c in counts])  # (H, W, N) uint8
    return torch.from_numpy(np.ascontiguousarray(stacked.transpose(2, 0, 1))).bool()


def augmented_sample(image: torch.Tensor, masks: torch.Tensor, category_ids: list[int],
                     augmentation: Augmentation | None, rng: np.random.Generator) -> dict:
    """Apply `augmentation` (None: none) and drop the instances left without pixels."""
    if augmentation is not None:
        image, masks = augmentation(image, masks, rng)
    keep = masks.flatten(1).any(1)
    return {"image": image, "masks": masks[keep],
            "category_ids": torch.tensor(category_ids, dtype=torch.int64)[keep]}


def image_file_name(image: dict, source: str | Path, where: str) -> str:
    """COCO's `file_name`, else `<split folder>/<file>` from LVIS's `coco_url` (as detectron2's LVIS
    loader, so that LVIS images are found under coco/train2017/)."""
    if isinstance(image.get("file_name"), str):
        return relative_file_name(image["file_name"], source, f"{where}.file_name")
    url = image.get("coco_url")
    if isinstance(url, str) and "/" in url:
        return relative_file_name("/".join(url.split("/")[-2:]), source, f"{where}.coco_url")
    raise InputError(source, where, "has neither file_name nor coco_url")


class ImageInstanceDataset(torch.utils.data.Dataset):
    """LVIS v1 or COCO instance annotations: one item per image with at least one non-crowd annotation.

    Crowd annotations are dropped; so are images left without annotations (FILTER_EMPTY_ANNOTATIONS).
    `image_categories[i]` lists the category ids of item i (for repeat-factor sampling).
    """

    def __init__(self, annotation_json: str | Path, image_root: str | Path, augmentation: Augmentation | None = None):
        self.annotation_json = Path(annotation_json)
        self.image_root = Path(image_root)
        self.augmentation = augmentation
        gt = load_image_gt(annotation_json)
        annotations_of: dict[int, list[dict]] = {image["id"]: [] for image in gt["images"]}
        for annotation in gt["annotations"]:
            if not annotation.get("iscrowd", 0):
                annotations_of[annotation["image_id"]].append(annotation)
        records = []
        for i, image in enumerate(gt["images"]):
            annotations = annotations_of[image["id"]]
            if annotations:
                records.append({
                    "image_id": image["id"], "height": image["height"], "width": image["width"],
                    "file_name": image_file_name(image, annotation_json, f"images[{i}]"),
                    "category_ids": [a["category_id"] for a in annotations],
                    "counts": [a["segmentation"]["counts"] for a in annotations],
                })
        if not records:
            raise InputError(annotation_json, "annotations", "no image has a non-crowd annotation to train on")
        log.info("%s: %d training images (%d without non-crowd annotations dropped)",
                 annotation_json, len(records), len(gt["images"]) - len(records))
        self.image_categories = [record["category_ids"] for record in records]
        self._records = PackedRecords(records)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, index: int, sample_seed: int) -> dict:
        record = self._records[index]
        height, width = record["height"], record["width"]
        image = read_rgb(self.image_root / record["file_name"], height, width, self.annotation_json)
        masks = decode_masks(record["counts"], height, width)
        sample = augmented_sample(image, masks, record["category_ids"], self.augmentation,
                                  np.random.default_rng(sample_seed))
        sample["image_id"] = record["image_id"]
        return sample

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.get(*key)


class VideoFrameDataset(torch.utils.data.Dataset):
    """YTVIS-style videos for single-frame training: one item per video, and each access picks one
    of its frames uniformly (SAMPLING_FRAME_NUM 1) with the sample's generator.

    Instances absent in that frame (null segmentation or box) are dropped; a frame may have no
    instance (FILTER_EMPTY_ANNOTATIONS False). Crowd annotations and videos without frames are dropped.
    """

    def __init__(self, annotation_json: str | Path, image_root: str | Path, augmentation: Augmentation | None = None):
        self.annotation_json = Path(annotation_json)
        self.image_root = Path(image_root)
        self.augmentation = augmentation
        gt = load_video_gt(annotation_json)
        instances_of: dict[int, list[dict]] = {video["id"]: [] for video in gt["videos"]}
        for annotation in gt["annotations"]:
            if not annotation.get("iscrowd", 0):
                instances_of[annotation["video_id"]].append(annotation)
        records = []
        for i, video in enumerate(gt["videos"]):
            if "file_names" not in video:
                raise InputError(annotation_json, f"videos[{i}].file_names", "missing; training reads the frames")
            for t, name in enumerate(video["file_names"]):
                relative_file_name(name, annotation_json, f"videos[{i}].file_names[{t}]")
            if video["length"] == 0:
                continue
            instances = instances_of[video["id"]]
            records.append({
                "video_id": video["id"], "height": video["height"], "width": video["width"],
                "file_names": video["file_names"],
                "category_ids": [a["category_id"] for a in instances],
                "counts": [_frame_counts(a) for a in instances],  # [instance][frame] str or None
            })
        if not records:
            raise InputError(annotation_json, "videos", "no video with frames to train on")
        log.info("%s: %d training videos", annotation_json, len(records))
        self._records = PackedRecords(records)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, index: int, sample_seed: int) -> dict:
        record = self._records[index]
        rng = np.random.default_rng(sample_seed)
        frame = int(rng.integers(len(record["file_names"])))
        present = [(category, counts[frame]) for category, counts in zip(record["category_ids"], record["counts"])
                   if counts[frame] is not None]
        height, width = record["height"], record["width"]
        image = read_rgb(self.image_root / record["file_names"][frame], height, width, self.annotation_json)
        masks = decode_masks([counts for _, counts in present], height, width)
        sample = augmented_sample(image, masks, [category for category, _ in present], self.augmentation, rng)
        sample["video_id"] = record["video_id"]
        sample["frame_index"] = frame
        return sample

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.get(*key)


def _frame_counts(annotation: dict) -> list[str | None]:
    """Per frame, the RLE counts of the instance, or None where the reference loader skips the frame
    (segmentation or box null)."""
    boxes = annotation.get("bboxes")
    return [None if rle is None or (boxes is not None and not boxes[t]) else rle["counts"]
            for t, rle in enumerate(annotation["segmentations"])]


def collate(samples: list[dict]) -> list[dict]:
    """A batch is the list of its samples (detectron2's trivial batch collator)."""
    return list(samples)


def build_train_dataset(benchmark_name: str, root: str | Path,
                        train_cfg: TrainConfig) -> ImageInstanceDataset | VideoFrameDataset:
    """The training dataset of a registered benchmark under the data root, with `train_cfg`'s augmentation."""
    benchmark = get_benchmark(benchmark_name)
    for missing in missing_paths(benchmark, root):
        how = f"; {benchmark.manual}" if benchmark.manual else ""
        raise InputError(missing.path, "", f"{'folder' if missing.is_dir else 'file'} of {benchmark.name} "
                                           f"is missing{how}")
    augmentation = build_augmentation(train_cfg.augmentation, train_cfg.image_size, train_cfg.lsj_scale,
                                      train_cfg.min_size_train, train_cfg.max_size_train)
    dataset_type = ImageInstanceDataset if benchmark.kind == "image" else VideoFrameDataset
    return dataset_type(benchmark.annotation_path(root), benchmark.image_path(root), augmentation)


def train_loader(dataset: torch.utils.data.Dataset, sampler: torch.utils.data.Sampler,
                 num_workers: int) -> torch.utils.data.DataLoader:
    """Batches of one rank (lists of samples, `sampler.batch_size` each), in sampler order
    whatever the number of workers."""
    return torch.utils.data.DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, collate_fn=collate,
                                       num_workers=num_workers, persistent_workers=num_workers > 0)


def remove_categories(gt: dict, frequency: str = "r") -> dict:
    """A copy of an LVIS annotation dict without the annotations of categories of `frequency`
    ('r' rare, 'c' common, 'f' frequent); images and categories are kept (tools/remove_lvis_rare.py).
    This derives lvis_v1_train_norare from lvis_v1_train."""
    removed = {category["id"] for category in gt["categories"] if category.get("frequency") == frequency}
    return {**gt, "annotations": [a for a in gt["annotations"] if a["category_id"] not in removed]}
