"""Writes the toy world to disk in the real benchmarks' formats: `generate_toy_world` is the entry point.

Layout under `root/toy/`:

    categories.json                  {"categories": [{id, name, partition, frequency, colour, shape}]}
    toy_lvis_train/annotations.json  LVIS v1 images, base categories only   + images/<id:06d>.jpg
    toy_lvis_val/annotations.json    LVIS v1 held-out images, all categories + images/<id:06d>.jpg
    toy_ytvis_train/annotations.json YTVIS 2019 videos, base categories only + JPEGImages/<video>/<frame>.jpg
    toy_lvvis/annotations.json       YTVIS videos, all categories (LV-VIS `partition`) + JPEGImages/...
    toy_ovis/annotations.json        YTVIS videos crowded with overlapping objects, all categories + JPEGImages/...
    toy_captions/captions.json       {"items": [{id, file_name, caption, category_ids, segmentations, split}]} + images/...
    world.json                       the format version, config, counts and a content hash; written last

Training sets keep the pixels of novel objects but drop their annotations (as LVIS without its rare
categories does). toy_lvis_val has the scenes of toy_lvis_train, but every category is equally likely
and every object is annotated: it gives image-level AP on base and novel categories. Every category
list holds all categories, so ids are 1..N in every file. File names in annotations are relative to
the images folder (`images/` or `JPEGImages/`). A caption item's `segmentations` are the visible masks of its
categories (compressed RLE, one per category id, in the same order): the toy CLIP learns to name them.
Scene i of a dataset comes from its own seed (config seed, dataset name, i): see `dataset_scenes`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pycocotools.mask as mask_api
from PIL import Image
from tqdm import tqdm

from clipvis.config import ToyWorldConfig
from clipvis.toy.render import render_scene
from clipvis.toy.samples import DEFAULT_SAMPLES_PATH, write_toy_samples
from clipvis.toy.world import (BACKGROUND_KINDS, CONFIG_SOURCE, Category, Scene, SceneStyle, make_categories,
                               simulate_scene, stable_seed)
from clipvis.errors import InputError
from clipvis.files import output_lock, read_json, write_json

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
WORLD_FORMAT = 4  # bumped when the files change for the same config, so that older worlds are regenerated
LVIS_TRAIN, LVIS_VAL, YTVIS_TRAIN, CAPTIONS = "toy_lvis_train", "toy_lvis_val", "toy_ytvis_train", "toy_captions"
LVVIS, OVIS = "toy_lvvis", "toy_ovis"
IMAGE_SETS = (LVIS_TRAIN, LVIS_VAL)
VIDEO_SETS = (YTVIS_TRAIN, LVVIS, OVIS)
TRAINING_SETS = (LVIS_TRAIN, YTVIS_TRAIN)  # base annotations only, categories sampled by frequency
FREQUENCY_WEIGHT = {"f": 3.0, "c": 1.0, "r": 1.0}  # how often an object is of a category, in training sets

# Caption scenes: one object (also the held-out images) or a few, all of the sizes video objects have.
SINGLE_OBJECT = SceneStyle(frames=(1, 1), objects=(1, 1), radius=(0.15, 0.3), speed=(0, 0))
FEW_OBJECTS = SceneStyle(frames=(1, 1), objects=(2, 3), radius=(0.15, 0.28), speed=(0, 0), distinct_categories=True)
BACKGROUND_WORDS = dict(zip(BACKGROUND_KINDS, ("noisy", "striped", "smooth")))


def generate_toy_world(cfg: ToyWorldConfig, root: Path,
                       samples_path: Path | None = DEFAULT_SAMPLES_PATH) -> Path:
    """Generate the toy world under `root/toy` (returned) unless it is there with the same config.

    Also writes the sample figure to `samples_path` (relative paths are relative to the working
    directory; None skips it) when the world is generated or the figure is missing.
    """
    _check_config(cfg)
    toy = Path(root) / "toy"
    manifest_path = toy / "world.json"
    config = asdict(cfg)
    with output_lock(toy):
        if manifest_path.exists() and _manifest_matches(read_json(manifest_path), config):
            log.info("toy world at %s was generated with the same config; skipping generation", toy)
            generated = False
        else:
            manifest_path.unlink(missing_ok=True)  # from here on, nothing claims a complete world
            start = time.perf_counter()
            counts = _write_world(cfg, toy)
            write_json(manifest_path, {"format": WORLD_FORMAT, "config": config, "counts": counts,
                                       "content_hash": _content_hash(toy)}, indent=2)
            log.info("toy world written to %s in %.1f s", toy, time.perf_counter() - start)
            generated = True
    if samples_path is not None and (generated or not Path(samples_path).exists()):
        write_toy_samples(toy, Path(samples_path))
    return toy


def _manifest_matches(manifest: dict, config: dict) -> bool:
    return manifest.get("format") == WORLD_FORMAT and manifest.get("config") == config


def frame_shape(cfg: ToyWorldConfig) -> tuple[int, int]:
    """(height, width) of every toy frame and image."""
    return cfg.frame_size, round(cfg.frame_size * cfg.frame_aspect)


def dataset_scenes(cfg: ToyWorldConfig, categories: Sequence[Category], dataset: str) -> Iterator[Scene]:
    """The scenes of an image or video dataset, in file order."""
    count, style, weights = _recipe(cfg, categories, dataset)
    height, width = frame_shape(cfg)
    for index in range(count):
        rng = np.random.default_rng(stable_seed(cfg.seed, dataset, index))
        yield simulate_scene(rng, style, categories, weights, height, width)


def _recipe(cfg: ToyWorldConfig, categories: Sequence[Category], dataset: str) -> tuple[int, SceneStyle, np.ndarray]:
    """(number of scenes, their style, category weights) of a dataset."""
    frames = (cfg.min_frames, cfg.max_frames)
    videos = SceneStyle(frames=frames, objects=(2, max(2, cfg.max_objects)), radius=(0.15, 0.3),
                        speed=(0.01, 0.035), exits=1, crossing_probability=0.5)
    crowded = SceneStyle(frames=frames, objects=(cfg.max_objects, 2 * cfg.max_objects), radius=(0.15, 0.28),
                         speed=(0.005, 0.02), spread=0.5, exits=1, crossing_probability=1.0)
    images = SceneStyle(frames=(1, 1), objects=(1, cfg.max_objects), radius=(0.15, 0.3), speed=(0, 0))
    recipes = {
        LVIS_TRAIN: (cfg.train_images, images),
        LVIS_VAL: (cfg.val_images, images),
        YTVIS_TRAIN: (cfg.train_videos, videos),
        LVVIS: (cfg.val_videos, videos),
        OVIS: (cfg.ovis_videos, crowded),
    }
    count, style = recipes[dataset]
    if dataset in TRAINING_SETS:
        weights = np.array([FREQUENCY_WEIGHT[c.frequency] for c in categories])
    else:
        weights = np.ones(len(categories))
    return count, style, weights / weights.sum()


def _check_config(cfg: ToyWorldConfig) -> None:
    checks = [
        ("seed", cfg.seed >= 0, "must be 0 or more"),
        ("frame_size", cfg.frame_size >= 16, "must be at least 16 pixels"),
        ("frame_aspect", 1 <= cfg.frame_aspect <= 3, "must be between 1 and 3 (width / height)"),
        ("min_frames", cfg.min_frames >= 1, "must be at least 1"),
        ("max_frames", cfg.max_frames >= cfg.min_frames, "must be at least min_frames"),
        ("max_objects", cfg.max_objects >= 1, "must be at least 1"),
    ]
    # every set is read by a later stage (training, inference, scoring, the toy CLIP): none may be empty
    checks += [(key, getattr(cfg, key) >= 1, "must be at least 1 (a later stage reads this set)")
               for key in ("train_images", "val_images", "train_videos", "val_videos", "ovis_videos",
                           "caption_images", "heldout_captions")]
    for key, ok, problem in checks:
        if not ok:
            raise InputError(CONFIG_SOURCE, f"toy.{key}", f"{problem}, got {getattr(cfg, key)!r}")


def _write_world(cfg: ToyWorldConfig, toy: Path) -> dict:
    categories = make_categories(cfg.colours, cfg.shapes, cfg.novel_fraction, cfg.seed)
    for dataset in (*IMAGE_SETS, *VIDEO_SETS, CAPTIONS):
        shutil.rmtree(toy / dataset, ignore_errors=True)  # no stale frames from an earlier config
    write_json(toy / "categories.json", {"categories": [c.record() for c in categories]}, indent=2)
    base_ids = {c.id for c in categories if not c.is_novel}
    all_ids = {c.id for c in categories}
    counts = {"categories": {"base": len(base_ids), "novel": len(all_ids - base_ids)}}
    for dataset in (*IMAGE_SETS, *VIDEO_SETS):
        annotated = base_ids if dataset in TRAINING_SETS else all_ids
        write = _write_lvis if dataset in IMAGE_SETS else _write_ytvis
        count = _recipe(cfg, categories, dataset)[0]
        counts[dataset] = write(toy / dataset, dataset_scenes(cfg, categories, dataset), count, categories,
                                annotated, dataset)
    counts[CAPTIONS] = _write_captions(toy / CAPTIONS, cfg, categories)
    return counts


def _encode(mask: np.ndarray) -> tuple[dict, list[float], float]:
    """(H, W) bool -> (compressed RLE with str counts, bbox xywh, area)."""
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox, area = mask_api.toBbox(rle).tolist(), float(mask_api.area(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, bbox, area


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=JPEG_QUALITY)


def _info(dataset: str) -> dict:
    return {"description": f"clipvis toy world: {dataset}", "version": "1.0"}


def _write_lvis(directory: Path, scenes: Iterator[Scene], total: int, categories: Sequence[Category],
                annotated: set[int], dataset: str) -> dict:
    images, annotations = [], []
    for image_id, scene in enumerate(tqdm(scenes, total=total, desc=dataset, unit="image"), start=1):
        (frame,) = render_scene(scene)
        file_name = f"{image_id:06d}.jpg"
        _save_jpeg(directory / "images" / file_name, frame.image)
        present = set()
        for obj, mask in zip(scene.objects, frame.visible):
            if obj.category_id in annotated and mask.any():
                present.add(obj.category_id)
                rle, bbox, area = _encode(mask)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": obj.category_id,
                                    "segmentation": rle, "bbox": bbox, "area": area})
        images.append({"id": image_id, "file_name": file_name, "height": scene.height, "width": scene.width,
                       "neg_category_ids": sorted(annotated - present), "not_exhaustive_category_ids": []})
    image_sets: dict[int, set[int]] = {c.id: set() for c in categories}
    for annotation in annotations:
        image_sets[annotation["category_id"]].add(annotation["image_id"])
    records = [{**c.record(), "synonyms": [c.name], "image_count": len(image_sets[c.id]),
                "instance_count": sum(a["category_id"] == c.id for a in annotations)} for c in categories]
    write_json(directory / "annotations.json", {"info": _info(dataset), "images": images,
                                                "annotations": annotations, "categories": records})
    return {"images": len(images), "annotations": len(annotations)}


def _write_ytvis(directory: Path, scenes: Iterator[Scene], total: int, categories: Sequence[Category],
                 annotated: set[int], dataset: str) -> dict:
    videos, annotations = [], []
    for video_id, scene in enumerate(tqdm(scenes, total=total, desc=dataset, unit="video"), start=1):
        name = f"{video_id - 1:05d}"
        keep = [obj.category_id in annotated for obj in scene.objects]
        tracks: list[list] = [[] for _ in scene.objects]  # per object, per frame: (rle, bbox, area) or None
        file_names = []
        for t, frame in enumerate(render_scene(scene)):
            file_names.append(f"{name}/{t:05d}.jpg")
            _save_jpeg(directory / "JPEGImages" / file_names[-1], frame.image)
            for track, mask, wanted in zip(tracks, frame.visible, keep):
                track.append(_encode(mask) if wanted and mask.any() else None)
        length = scene.num_frames
        videos.append({"id": video_id, "name": name, "width": scene.width, "height": scene.height,
                       "length": length, "file_names": file_names})
        for obj, track, wanted in zip(scene.objects, tracks, keep):
            if not wanted or all(entry is None for entry in track):
                continue
            annotations.append({
                "id": len(annotations) + 1, "video_id": video_id, "category_id": obj.category_id, "iscrowd": 0,
                "height": scene.height, "width": scene.width, "length": length,
                "segmentations": [entry and entry[0] for entry in track],
                "bboxes": [entry and entry[1] for entry in track],
                "areas": [entry and entry[2] for entry in track],
            })
    write_json(directory / "annotations.json", {"info": _info(dataset), "videos": videos, "annotations": annotations,
                                                "categories": [c.record() for c in categories]})
    return {"videos": len(videos), "frames": sum(v["length"] for v in videos), "annotations": len(annotations)}


def _write_captions(directory: Path, cfg: ToyWorldConfig, categories: Sequence[Category]) -> dict:
    """Image-caption pairs over all categories, then held-out single-object images (each category in turn)."""
    plan = [("train", i) for i in range(cfg.caption_images)] + [("heldout", i) for i in range(cfg.heldout_captions)]
    items = []
    for item_id, (split, index) in enumerate(tqdm(plan, desc=CAPTIONS, unit="image"), start=1):
        scene, rng = caption_scene(cfg, categories, split, index)
        (frame,) = render_scene(scene)
        file_name = f"{item_id:06d}.jpg"
        _save_jpeg(directory / "images" / file_name, frame.image)
        caption, category_ids = _describe(scene, frame.visible, categories, rng, plain=split == "heldout")
        masks = [_encode(frame.visible[[obj.category_id == i for obj in scene.objects]].any(0))[0] for i in category_ids]
        items.append({"id": item_id, "file_name": file_name, "caption": caption, "category_ids": category_ids,
                      "segmentations": masks, "split": split})
    write_json(directory / "captions.json", {"info": _info(CAPTIONS), "items": items})
    return {"train": cfg.caption_images, "heldout": cfg.heldout_captions}


def caption_scene(cfg: ToyWorldConfig, categories: Sequence[Category], split: str,
                  index: int) -> tuple[Scene, np.random.Generator]:
    """Caption image `index` of `split` ("train" or "heldout"), and its generator (which goes on to word the
    caption): train images show one object or a few of any categories, held-out images one object of each
    category in turn."""
    height, width = frame_shape(cfg)
    rng = np.random.default_rng(stable_seed(cfg.seed, CAPTIONS, split, index))
    if split == "train":
        style = SINGLE_OBJECT if rng.random() < 0.5 else FEW_OBJECTS
        return simulate_scene(rng, style, categories, np.full(len(categories), 1 / len(categories)), height,
                              width), rng
    weights = np.eye(len(categories))[index % len(categories)]
    return simulate_scene(rng, SINGLE_OBJECT, categories, weights, height, width), rng


def _describe(scene: Scene, visible: np.ndarray, categories: Sequence[Category], rng: np.random.Generator,
              plain: bool) -> tuple[str, list[int]]:
    """A caption naming the visible objects left to right, and their category ids.

    `plain` gives "a photo of a <category>"; otherwise templates vary and mention sizes and backgrounds.
    """
    name = {c.id: c.name for c in categories}
    shown = sorted((obj for obj, mask in zip(scene.objects, visible) if mask.any()), key=lambda o: o.centres[0, 0])
    if plain:
        return f"a photo of a {name[shown[0].category_id]}", [shown[0].category_id]
    phrases = []
    for obj in shown:
        relative = obj.radius / scene.height
        size = "small " if relative < 0.14 else "large " if relative > 0.25 else ""
        phrases.append(f"a {size if rng.random() < 0.7 else ''}{name[obj.category_id]}")
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    background = BACKGROUND_WORDS[scene.background.kind]
    templates = ("a photo of {}", "{}", "{} on a {} background", "a picture of {}")
    caption = templates[int(rng.integers(len(templates)))].format(listed, background)
    return caption, list(dict.fromkeys(obj.category_id for obj in shown))


def _content_hash(toy: Path) -> str:
    """sha256 over the relative path and bytes of every file of the world except world.json and hidden
    files (the output lock)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in toy.rglob("*")
                       if p.is_file() and p.name != "world.json" and not p.name.startswith(".")):
        digest.update(path.relative_to(toy).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()
