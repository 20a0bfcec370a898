"""Convert BURST's official annotation format to the YTVIS-style video format the rest of clipvis reads.

BURST (`all_classes.json`) keeps, per sequence, one dict per annotated frame mapping a track id
(a string) to ``{"rle": str, ...}``, and a `track_category_ids` dict mapping track ids to LVIS
category ids. The conversion follows the CLIP-VIS reference (`tools/burst2ytvis.py`):

- one video per sequence: `length` = number of *annotated* frames, `file_names` =
  ``dataset/seq_name/<frame>``, plus `neg_category_ids`, `not_exhaustive_category_ids` (still
  BURST's LVIS ids) and `metadata.dataset`;
- one annotation per track: per annotated frame a compressed RLE or null (track absent), integer
  xywh `bboxes` or null; ids run 1.. over all tracks (the reference starts at 0, which a COCO-style
  scorer cannot match, since it marks "unmatched" with id 0);
- categories re-indexed 1..N in file order, each keeping its fields (LVIS `frequency` included),
  with its LVIS id as `lvis_id` and `split` 'common' / 'uncommon' from `class_split.json`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pycocotools.mask as mask_api

from clipvis.data.formats import JsonChecker
from clipvis.files import read_json, write_json

log = logging.getLogger(__name__)


def convert_burst(annotations_json: str | Path, class_split_json: str | Path) -> dict:
    """BURST annotations (e.g. `val/all_classes.json`) plus `info/class_split.json` as a YTVIS-style dict."""
    data = read_json(annotations_json)
    checker = JsonChecker(annotations_json)
    checker.check(data, "object", "")
    categories, new_category_id = _categories(checker, data, _class_split(class_split_json))
    sequences = checker.records(data, "sequences")
    checker.index_by_id(sequences, "sequences")

    videos, annotations = [], []
    for s, sequence in enumerate(sequences):
        where = f"sequences[{s}]"
        height, width = (checker.get(sequence, key, where, "positive int") for key in ("height", "width"))
        dataset = checker.get(sequence, "dataset", where, "str")
        name = checker.get(sequence, "seq_name", where, "str")
        frame_paths = checker.get(sequence, "annotated_image_paths", where, "str list")
        videos.append({
            "id": sequence["id"], "width": width, "height": height, "length": len(frame_paths),
            "file_names": [f"{dataset}/{name}/{path}" for path in frame_paths],
            "neg_category_ids": checker.get(sequence, "neg_category_ids", where, "int list", optional=True) or [],
            "not_exhaustive_category_ids":
                checker.get(sequence, "not_exhaustive_category_ids", where, "int list", optional=True) or [],
            "metadata": {"dataset": dataset},
        })

        track_categories = checker.get(sequence, "track_category_ids", where, "object")
        frames = checker.get(sequence, "segmentations", where, "list")
        if len(frames) != len(frame_paths):
            checker.fail(f"{where}.segmentations",
                         f"has {len(frames)} frames, annotated_image_paths has {len(frame_paths)}")
        tracks = {track: [None] * len(frames) for track in track_categories}  # track id -> mask per frame
        for t, frame in enumerate(frames):
            checker.check(frame, "object", f"{where}.segmentations[{t}]")
            for track, entry in frame.items():
                field = f'{where}.segmentations[{t}]["{track}"]'
                if track not in tracks:
                    checker.fail(field, f"track {track} has no entry in track_category_ids")
                checker.check(entry, "object", field)
                rle = {"size": [height, width], "counts": checker.get(entry, "rle", field, "str")}
                tracks[track][t] = checker.mask(rle, f"{field}.rle", height, width, f"sequence {sequence['id']}")
        for track, masks in tracks.items():
            field = f'{where}.track_category_ids["{track}"]'
            category_id = checker.check(track_categories[track], "int", field)
            if category_id not in new_category_id:
                checker.fail(field, f"category {category_id} does not exist")
            annotations.append({
                "id": len(annotations) + 1, "video_id": sequence["id"], "category_id": new_category_id[category_id],
                "width": width, "height": height, "segmentations": masks,
            })
    checker.check_masks()
    for annotation in annotations:
        annotation["bboxes"] = _boxes(annotation["segmentations"])
    log.info("%s: %d sequences, %d tracks, %d categories", annotations_json, len(videos), len(annotations),
             len(categories))
    return {"videos": videos, "annotations": annotations, "categories": categories}


def write_burst_conversion(in_json: str | Path, split_json: str | Path, out_json: str | Path) -> None:
    """Convert BURST annotations and write the YTVIS-style file atomically."""
    write_json(out_json, convert_burst(in_json, split_json))


def _class_split(path: str | Path) -> dict[int, str]:
    """LVIS category id -> 'common' or 'uncommon', from BURST's `class_split.json`."""
    data = read_json(path)
    checker = JsonChecker(path)
    checker.check(data, "object", "")
    split: dict[int, str] = {}
    for name in ("common", "uncommon"):
        for i, category_id in enumerate(checker.get(data, name, "", "int list")):
            if category_id in split:
                checker.fail(f"{name}[{i}]", f"category {category_id} is listed as {split[category_id]} already")
            split[category_id] = name
    return split


def _categories(checker: JsonChecker, data: dict, split: dict[int, str]) -> tuple[list[dict], dict[int, int]]:
    """Categories re-indexed 1..N in file order with their split, and the LVIS id -> new id map."""
    categories = checker.records(data, "categories")
    checker.index_by_id(categories, "categories")
    converted, new_id = [], {}
    for i, category in enumerate(categories):
        checker.get(category, "name", f"categories[{i}]", "str")
        if category["id"] not in split:
            checker.fail(f"categories[{i}].id", f"category {category['id']} is in neither list of the class split")
        new_id[category["id"]] = i + 1
        converted.append({**copy.deepcopy(category), "id": i + 1, "lvis_id": category["id"],
                          "split": split[category["id"]]})
    return converted, new_id


def _boxes(masks: list[dict | None]) -> list[list[int] | None]:
    """Integer [x, y, width, height] of each mask; None stays None."""
    present = [rle for rle in masks if rle is not None]
    boxes = iter(mask_api.toBbox(present).astype(int).tolist() if present else [])
    return [None if rle is None else next(boxes) for rle in masks]
