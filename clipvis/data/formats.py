"""Readers and validators for annotation and result JSON: YTVIS-style video files and LVIS/COCO image files.

Every mask comes back as compressed COCO RLE ``{"size": [h, w], "counts": str}`` (null where a video
frame has no mask). Every problem raises InputError naming the file and the field, for example
``annotations[12].segmentations[3]: size [100, 90] disagrees with video 7 (height 120, width 160)``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import numpy as np
import pycocotools.mask as mask_api
from tqdm import tqdm

from clipvis.errors import InputError
from clipvis.files import read_json, write_json

log = logging.getLogger(__name__)

RLE_BATCH = 1000  # compressed RLE strings decoded together (small batches stay in cache: ~2x faster)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# kind name -> (test, what the message says was expected)
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "object": (lambda v: isinstance(v, dict), "an object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_is_int, "an integer"),
    "positive int": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "count": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "number": (_is_number, "a finite number"),
    "area": (lambda v: _is_number(v) and v >= 0, "a non-negative number"),
    "flag": (lambda v: _is_int(v) and v in (0, 1), "0 or 1"),
    "int list": (lambda v: isinstance(v, list) and all(map(_is_int, v)), "a list of integers"),
    "str list": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "a list of strings"),
    "box": (lambda v: isinstance(v, list) and len(v) == 4 and all(map(_is_number, v)), "[x, y, width, height]"),
    "size": (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(s) and s > 0 for s in v),
             "[height, width] as positive integers"),
    "partition": (lambda v: _is_int(v) and v in (0, 1, 2, 3), "0, 1, 2 or 3 (LV-VIS partition)"),
    "frequency": (lambda v: v in ("f", "c", "r"), "'f', 'c' or 'r' (LVIS frequency)"),
    "split": (lambda v: v in ("common", "uncommon"), "'common' or 'uncommon' (BURST split)"),
}


def _integers(values: list) -> np.ndarray | None:
    """A flat list of integers as an array [N]; None if it is anything else."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):  # ragged nesting
        return None
    return array if array.ndim == 1 and array.dtype.kind in "iu" else None


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class JsonChecker:
    """Checks the fields of one parsed JSON file; every failure is an InputError naming the file and field.

    `mask` normalises each mask and queues it; `check_masks` then decodes all queued masks in fast
    vectorised batches, checks them and returns their areas.
    """

    def __init__(self, source: str | Path):
        self.source = str(source)
        self._queued: list[tuple[str, dict]] = []  # (field, RLE) of the masks met since the last check_masks

    def fail(self, field: str, problem: str) -> NoReturn:
        raise InputError(self.source, field, problem)

    def check(self, value: Any, kind: str, field: str, nullable: bool = False) -> Any:
        if nullable and value is None:
            return value
        test, wanted = _KINDS[kind]
        if not test(value):
            self.fail(field, f"expected {wanted}{' or null' if nullable else ''}, got {_show(value)}")
        return value

    def get(self, record: dict, key: str, where: str, kind: str, optional: bool = False) -> Any:
        """record[key] checked to be of `kind`; None if it is missing and `optional`."""
        if key not in record:
            if optional:
                return None
            self.fail(_join(where, key), "missing")
        return self.check(record[key], kind, _join(where, key))

    def records(self, parent: dict, key: str) -> list[dict]:
        """parent[key] as a list of objects."""
        items = self.get(parent, key, "", "list")
        for i, item in enumerate(items):
            self.check(item, "object", f"{key}[{i}]")
        return items

    def index_by_id(self, records: list[dict], name: str) -> dict[int, dict]:
        """Records by their integer `id`; ids must be unique."""
        by_id: dict[int, dict] = {}
        for i, record in enumerate(records):
            record_id = self.get(record, "id", f"{name}[{i}]", "int")
            if record_id in by_id:
                self.fail(f"{name}[{i}].id", f"duplicate id {record_id}")
            by_id[record_id] = record
        return by_id

    def reference(self, record: dict, key: str, where: str, targets: dict[int, dict], name: str) -> dict:
        """The record in `targets` whose id is record[key]."""
        target_id = self.get(record, key, where, "int")
        if target_id not in targets:
            self.fail(_join(where, key), f"{name} {target_id} does not exist")
        return targets[target_id]

    def mask(self, entry: Any, field: str, height: int, width: int, owner: str,
             polygons: bool = True) -> dict | None:
        """One mask (null, polygons, uncompressed or compressed RLE) as compressed RLE, or None.

        Polygons with fewer than 3 points (or an odd number of coordinates) are dropped, as the
        reference loader does; a polygon mask with none left becomes None.
        """
        if entry is None:
            return None
        if polygons and isinstance(entry, list):
            return self._polygons_to_rle(entry, field, height, width)
        if not isinstance(entry, dict):
            wanted = "polygons, an RLE object or null" if polygons else "an RLE object or null"
            self.fail(field, f"expected {wanted}, got {_show(entry)}")
        size = entry.get("size")
        if size != [height, width]:
            self.get(entry, "size", field, "size")  # says so if missing or malformed
            self.fail(field, f"size {size} disagrees with {owner} (height {height}, width {width})")
        counts = entry.get("counts")
        if isinstance(counts, bytes) and counts.isascii():
            counts = counts.decode("ascii")
        if isinstance(counts, str):
            return self._queue(field, {"size": [height, width], "counts": counts})
        if isinstance(counts, list):
            runs = _integers(counts)
            if runs is None or not ((runs >= 0) & (runs <= height * width)).all() or runs.sum() != height * width:
                self.fail(f"{field}.counts", f"uncompressed RLE must be non-negative run lengths summing "
                                              f"to {height * width} (height x width)")
            rle = mask_api.frPyObjects({"size": [height, width], "counts": runs}, height, width)
            return self._queue(field, {"size": [height, width], "counts": rle["counts"].decode("ascii")})
        if "counts" not in entry:
            self.fail(f"{field}.counts", "missing")
        self.fail(f"{field}.counts", f"expected a run-length list or an RLE string, got {_show(counts)}")

    def _polygons_to_rle(self, polygons: list, field: str, height: int, width: int) -> dict | None:
        kept = []
        for j, polygon in enumerate(polygons):
            try:
                coords = np.asarray(polygon, dtype=np.float64)  # [2 * points] as x0, y0, x1, y1, ...
            except (TypeError, ValueError):
                coords = np.empty((0, 0))
            if coords.ndim != 1 or not np.isfinite(coords).all():
                self.fail(f"{field}[{j}]", f"a polygon must be a flat list of numbers, got {_show(polygon)}")
            if len(coords) >= 6 and len(coords) % 2 == 0:
                kept.append(coords)
        if not kept:
            return None
        rle = mask_api.merge(mask_api.frPyObjects(kept, height, width))
        return self._queue(field, {"size": [height, width], "counts": rle["counts"].decode("ascii")})

    def _queue(self, field: str, rle: dict) -> dict:
        self._queued.append((field, rle))
        return rle

    def check_masks(self) -> list[int]:
        """Check every mask returned by `mask` since the last call; their areas, in the same order."""
        queued, self._queued = self._queued, []
        try:
            return rle_areas([rle for _, rle in queued]).tolist()
        except BadRLE as bad:
            self.fail(queued[bad.index][0], bad.problem)


class BadRLE(ValueError):
    """A compressed RLE whose counts string is not a mask of its size: its `index` in the list and the `problem`."""

    def __init__(self, index: int, problem: str):
        super().__init__(f"RLE {index}: {problem}")
        self.index = index
        self.problem = problem


def rle_areas(rles: list[dict]) -> np.ndarray:
    """Foreground pixel count of each compressed RLE (str counts) [N] int64, decoded with numpy in batches.

    Checks that every counts string covers exactly height x width pixels and raises BadRLE for the
    first that does not (pycocotools would decode it out of bounds). pycocotools' own `area`
    also fails on lists of 256 or more masks (2.0.11).
    """
    batches = [_batch_areas(rles[start:start + RLE_BATCH], start) for start in range(0, len(rles), RLE_BATCH)]
    return np.concatenate(batches) if batches else np.zeros(0, np.int64)


def _batch_areas(rles: list[dict], offset: int) -> np.ndarray:
    """`rle_areas` for one batch; BadRLE indices are shifted by `offset`.

    The COCO string format: each run length is written in 5-bit groups, one character (code
    48 + group) per group, low group first; bit 0x20 says another group follows, bit 0x10 of the
    last group is the sign. From the fourth run on, the stored value is the difference to the run
    two places back. Runs alternate background, foreground, background, ...
    """
    strings = [rle["counts"] for rle in rles]
    lengths = np.fromiter(map(len, strings), np.int64, len(strings))
    joined = "".join(strings)
    if not lengths.all():
        raise BadRLE(offset + int(lengths.argmin()), "RLE counts string is empty")
    if not joined.isascii():
        bad = next(i for i, text in enumerate(strings) if not text.isascii())
        raise BadRLE(offset + bad, "RLE counts string has characters outside the RLE alphabet")
    string_ends = np.cumsum(lengths)  # [N] exclusive
    groups = np.frombuffer(joined.encode("ascii"), np.uint8) - np.uint8(48)  # [C]
    if (groups > 63).any():
        bad = int(np.searchsorted(string_ends, (groups > 63).argmax(), "right"))
        raise BadRLE(offset + bad, "RLE counts string has characters outside the RLE alphabet")
    is_last_group = groups < 32  # [C] bit 0x20 clear
    truncated = ~is_last_group[string_ends - 1]
    if truncated.any():
        raise BadRLE(offset + int(truncated.argmax()), "RLE counts string ends in the middle of a number")

    # Runs (the whole batch in a row, none crosses a string border); string s holds runs first[s]..last[s].
    ends = np.flatnonzero(is_last_group)  # [R] last character of each run
    last = np.searchsorted(ends, string_ends) - 1  # [N]
    first = np.concatenate(([0], last[:-1] + 1))
    values = ((groups[ends].view(np.int8) ^ 0x10) - 0x10).astype(np.int32)  # [R] sign-extended last group
    # The few runs written with more than one group: add the lower groups.
    continued = np.flatnonzero(~is_last_group)  # [K] characters followed by another group of their run
    if len(continued):
        run_of = continued - np.arange(len(continued))  # [K] ascending
        multi, first_continued, n_lower = np.unique(run_of, return_index=True, return_counts=True)
        if (n_lower > 5).any():  # 6 groups hold 2**29; the int32 sums below wrap like pycocotools' uint
            bad = int(np.searchsorted(last, multi[(n_lower > 5).argmax()]))
            raise BadRLE(offset + bad, "RLE counts string holds an impossibly long run")
        group_index = np.arange(len(continued)) - np.repeat(first_continued, n_lower)
        lower = (groups[continued] & 0x1F).astype(np.int32) << (5 * group_index)
        values[multi] = np.add.reduceat(lower, first_continued) + (values[multi] << (5 * n_lower))

    # Undo the difference coding: run m >= 3 of a string is value m plus run m - 2, so each run is a
    # sum along its chain (run 0 alone; runs 1, 3, 5, ...; runs 2, 4, 6, ...). Chains live on one
    # parity of the batch position, so each half (even / odd positions) is a cumulative sum that
    # restarts at every chain start.
    chain_starts = np.stack([first, first + 1, first + 2], axis=1)[
        np.arange(3) <= (last - first)[:, None]]  # [S] ascending
    runs = []  # per parity: [R/2] run lengths at positions parity, parity + 2, ...
    for parity in (0, 1):
        half = values[parity::2]
        starts = chain_starts[chain_starts % 2 == parity] // 2  # indices into `half`
        before_start = np.where(starts > 0, np.cumsum(half, dtype=np.int32)[(starts - 1).clip(0)], 0)
        restarted = half.copy()
        restarted[starts] -= np.diff(before_start, prepend=0).astype(np.int32)
        runs.append(np.cumsum(restarted, dtype=np.int32, out=restarted))
    for parity in (0, 1):
        if (runs[parity] < 0).any():
            bad = int(np.searchsorted(last, 2 * (runs[parity] < 0).argmax() + parity))
            raise BadRLE(offset + bad, "RLE counts string decodes to a negative run length")

    running = np.zeros((2, (len(values) + 1) // 2 + 1), np.int64)  # [2, R/2 + 1]
    for parity in (0, 1):  # running[parity, i]: sum of the first i runs of that parity
        running[parity, 1:len(runs[parity]) + 1] = np.cumsum(runs[parity], dtype=np.int64)
    background = _sum_every_second(running, first, last - (last - first) % 2)
    foreground = _sum_every_second(running, first + 1, last - (last - first + 1) % 2)
    pixels = np.array([rle["size"][0] * rle["size"][1] for rle in rles], np.int64)
    wrong = np.flatnonzero(background + foreground != pixels)
    if len(wrong):
        i = int(wrong[0])
        raise BadRLE(offset + i, f"RLE counts string covers {background[i] + foreground[i]} pixels, "
                                 f"size {rles[i]['size']} has {pixels[i]}")
    return foreground


def _sum_every_second(running: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """runs[low] + runs[low + 2] + ... + runs[high] (0 where high < low); low and high are batch
    positions of the same parity, `running` the cumulative sums per parity from `_batch_areas`."""
    parity = low % 2
    return np.where(high >= low, running[parity, high // 2 + 1] - running[parity, low // 2], 0)


def _with_areas(masks: list[dict | None], areas: Iterator[int]) -> list[int | None]:
    """The area of each mask, taken in turn from `areas`; None for None."""
    return [None if rle is None else next(areas) for rle in masks]


def _check_categories(checker: JsonChecker, data: dict) -> dict[int, dict]:
    categories = checker.records(data, "categories")
    for i, category in enumerate(categories):
        where = f"categories[{i}]"
        checker.get(category, "name", where, "str")
        for key in ("partition", "frequency", "split"):
            checker.get(category, key, where, key, optional=True)
        checker.get(category, "synonyms", where, "str list", optional=True)
    return checker.index_by_id(categories, "categories")


def _check_size(checker: JsonChecker, record: dict, where: str) -> tuple[int, int]:
    return checker.get(record, "height", where, "positive int"), checker.get(record, "width", where, "positive int")


def _frames(checker: JsonChecker, record: dict, key: str, where: str, video: dict,
            optional: bool = False) -> list | None:
    """record[key]: a list with one entry per frame of `video` (None if missing and optional)."""
    values = checker.get(record, key, where, "list", optional=optional)
    if values is not None and len(values) != video["length"]:
        checker.fail(_join(where, key), f"has {len(values)} frames, video {video['id']} has {video['length']}")
    return values


def _frame_masks(checker: JsonChecker, record: dict, where: str, video: dict, polygons: bool) -> list:
    """record["segmentations"] normalised to one compressed RLE (or None) per frame of `video`."""
    frames = _frames(checker, record, "segmentations", where, video)
    return [checker.mask(entry, f"{where}.segmentations[{t}]", video["height"], video["width"],
                         f"video {video['id']}", polygons)
            for t, entry in enumerate(frames)]


def load_video_gt(path: str | Path) -> dict:
    """Read and validate a YTVIS-style video annotation file (YTVIS, OVIS, LV-VIS, converted BURST, toy).

    Returns the same structure with every segmentation as compressed RLE or None, and per-frame
    `areas` computed from the masks where the file has none.
    """
    data = read_json(path)
    checker = JsonChecker(path)
    checker.check(data, "object", "")
    videos = checker.records(data, "videos")
    for i, video in enumerate(videos):
        where = f"videos[{i}]"
        _check_size(checker, video, where)
        length = checker.get(video, "length", where, "count")
        file_names = checker.get(video, "file_names", where, "str list", optional=True)
        if file_names is not None and len(file_names) != length:
            checker.fail(f"{where}.file_names", f"has {len(file_names)} entries, length is {length}")
    video_by_id = checker.index_by_id(videos, "videos")
    category_by_id = _check_categories(checker, data)
    annotations = checker.records(data, "annotations")
    checker.index_by_id(annotations, "annotations")

    for i, annotation in enumerate(tqdm(annotations, desc="checking annotations", disable=None, leave=False)):
        where = f"annotations[{i}]"
        video = checker.reference(annotation, "video_id", where, video_by_id, "video")
        checker.reference(annotation, "category_id", where, category_by_id, "category")
        checker.get(annotation, "iscrowd", where, "flag", optional=True)
        annotation["segmentations"] = _frame_masks(checker, annotation, where, video, polygons=True)
        for key, kind in (("bboxes", "box"), ("areas", "area")):
            for t, value in enumerate(_frames(checker, annotation, key, where, video, optional=True) or []):
                checker.check(value, kind, f"{where}.{key}[{t}]", nullable=True)
    areas = iter(checker.check_masks())
    for annotation in annotations:
        measured = _with_areas(annotation["segmentations"], areas)
        annotation.setdefault("areas", measured)
    return data


def load_video_results(path: str | Path, gt: dict) -> list[dict]:
    """Read and validate a YTVIS-format result file against a ground truth from `load_video_gt`.

    Each result is ``{video_id, category_id, score, segmentations}`` with one RLE or null per frame;
    scores come back as floats, masks as compressed RLE with str counts, and each result gains
    per-frame `areas` (None where null), measured while checking. An empty list is valid.
    """
    results = read_json(path)
    checker = JsonChecker(path)
    checker.check(results, "list", "")
    video_by_id = {video["id"]: video for video in gt["videos"]}
    category_by_id = {category["id"]: category for category in gt["categories"]}
    for i, result in enumerate(tqdm(results, desc="checking results", disable=None, leave=False)):
        where = f"[{i}]"
        checker.check(result, "object", where)
        video = checker.reference(result, "video_id", where, video_by_id, "ground-truth video")
        checker.reference(result, "category_id", where, category_by_id, "ground-truth category")
        result["score"] = float(checker.get(result, "score", where, "number"))
        result["segmentations"] = _frame_masks(checker, result, where, video, polygons=False)
    areas = iter(checker.check_masks())
    for result in results:
        result["areas"] = _with_areas(result["segmentations"], areas)
    outside = [i for i, result in enumerate(results) if not 0.0 <= result["score"] <= 1.0]
    if outside:  # the official scorers accept them (only their order matters), but they suggest a mix-up
        log.warning("%s: %d scores are outside [0, 1] (the first: [%d].score = %s); scored as given",
                    path, len(outside), outside[0], results[outside[0]]["score"])
    return results


def write_video_results(path: str | Path, results: list[dict]) -> None:
    """Write YTVIS-format results atomically (a killed writer leaves the old file or none)."""
    write_json(path, results)


def load_image_gt(path: str | Path) -> dict:
    """Read and validate an LVIS v1 or COCO instance annotation file.

    Returns the same structure with every `segmentation` as compressed RLE and `area` filled in
    where missing. Annotations left without a mask (null, or only polygons under 3 points) are
    dropped with a warning, as the reference loader skips them.
    """
    data = read_json(path)
    checker = JsonChecker(path)
    checker.check(data, "object", "")
    category_by_id = _check_categories(checker, data)
    images = checker.records(data, "images")
    for i, image in enumerate(images):
        where = f"images[{i}]"
        _check_size(checker, image, where)
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            for j, category_id in enumerate(checker.get(image, key, where, "int list", optional=True) or []):
                if category_id not in category_by_id:
                    checker.fail(f"{where}.{key}[{j}]", f"category {category_id} does not exist")
    image_by_id = checker.index_by_id(images, "images")
    annotations = checker.records(data, "annotations")
    checker.index_by_id(annotations, "annotations")

    kept = []
    for i, annotation in enumerate(tqdm(annotations, desc="checking annotations", disable=None, leave=False)):
        where = f"annotations[{i}]"
        image = checker.reference(annotation, "image_id", where, image_by_id, "image")
        checker.reference(annotation, "category_id", where, category_by_id, "category")
        checker.get(annotation, "bbox", where, "box")
        checker.get(annotation, "area", where, "area", optional=True)
        checker.get(annotation, "iscrowd", where, "flag", optional=True)
        if "segmentation" not in annotation:
            checker.fail(f"{where}.segmentation", "missing")
        annotation["segmentation"] = checker.mask(annotation["segmentation"], f"{where}.segmentation",
                                                  image["height"], image["width"], f"image {image['id']}")
        if annotation["segmentation"] is not None:
            kept.append(annotation)
    for annotation, area in zip(kept, checker.check_masks(), strict=True):
        annotation.setdefault("area", area)
    if len(kept) < len(annotations):
        log.warning("%s: dropped %d annotations without a valid mask", path, len(annotations) - len(kept))
    data["annotations"] = kept
    return data
