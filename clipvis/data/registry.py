"""The benchmark registry: where each dataset lives under the data root, how it is scored, and how
to obtain it.

Paths are relative to the data root: `--root`, else `$CLIPVIS_DATA`, else the config's `data.root`
(see `resolve_root`). Real benchmarks follow the layout of the CLIP-VIS code (docs/method.md §9.1);
the toy ones are written by `clipvis data --benchmark toy` under `<root>/toy/`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clipvis.config import DataConfig
from clipvis.data.derived import BURST_VAL, LVIS_NORARE, Derivation
from clipvis.errors import InputError

DATA_ROOT_ENV = "CLIPVIS_DATA"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class RemoteFile:
    """A publicly downloadable file, pinned by checksum. Archives are unpacked into their folder."""

    url: str
    relative_path: str  # where the download goes, relative to the data root
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None  # bytes, when known (progress bar and a cheap completeness check)

    def __post_init__(self):
        if not (self.sha256 or self.md5):
            raise ValueError(f"{self.url}: a RemoteFile needs a sha256 or md5 checksum")

    @property
    def is_archive(self) -> bool:
        return self.relative_path.endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Benchmark:
    """One dataset split as the pipeline uses it."""

    name: str
    kind: Literal["video", "image"]
    role: Literal["train", "val", "test"]
    image_root: str  # frames (video) or images, relative to the data root
    annotations: str  # YTVIS-, LVIS- or COCO-style JSON, relative to the data root
    vocabulary: str  # an embedded list in clipvis/data/vocab/<name>.json, or "toy" (<root>/toy/categories.json)
    novel_split: Literal["partition", "frequency"] | None = None  # category field that marks base/novel
    uncommon_split: Literal["split"] | None = None  # category field (annotation file) marking common/uncommon
    scorer: Literal["lvvis", "ytvis", "burst"] | None = None
    has_public_gt: bool = True  # False: predictions are scored by `server`
    server: str | None = None
    downloads: tuple[RemoteFile, ...] = ()
    derived: Derivation | None = None  # the annotation file is written from downloaded ones
    manual: str | None = None  # how to obtain what cannot be downloaded automatically

    @property
    def is_toy(self) -> bool:
        return self.vocabulary == "toy"

    def annotation_path(self, root: str | Path) -> Path:
        return Path(root) / self.annotations

    def image_path(self, root: str | Path) -> Path:
        return Path(root) / self.image_root


def resolve_root(explicit: str | Path | None = None, configured: str | Path = DataConfig.root) -> Path:
    """The data root: an explicit path, else `$CLIPVIS_DATA`, else the configured one (default `data`)."""
    return Path(explicit or os.environ.get(DATA_ROOT_ENV) or configured)


# ---------------------------------------------------------------- downloadable files

COCO_TRAIN_IMAGES = RemoteFile(
    "http://images.cocodataset.org/zips/train2017.zip", "coco/train2017.zip",
    md5="cced6f7f71b7629ddf16f17bbcfab6b2", size=19_336_861_798)
COCO_ANNOTATIONS = RemoteFile(
    "http://images.cocodataset.org/annotations/annotations_trainval2017.zip", "coco/annotations_trainval2017.zip",
    md5="f4bbac642086de4f52a3fdda2de5fa2c", size=252_907_541)
LVIS_TRAIN_ANNOTATIONS = RemoteFile(
    "https://dl.fbaipublicfiles.com/LVIS/lvis_v1_train.json.zip", "lvis/lvis_v1_train.json.zip",
    md5="4410d837f71203af226950447ef9d422")

# ---------------------------------------------------------------- manual instructions

_LVVIS_README = "https://github.com/haochenheheda/LVVIS"
_YTVIS19_SITE = "https://codalab.lisn.upsaclay.fr/competitions/6064"
_YTVIS21_SITE = "https://codalab.lisn.upsaclay.fr/competitions/7680"
_OVIS_SITE = "https://codalab.lisn.upsaclay.fr/competitions/4763"


def _ytvis_manual(site: str, folder: str, split: str) -> str:
    return (f"register at {site} (Participate > Get data), download the {split} frames and {split}.json, "
            f"and put them at {folder}/{split}/JPEGImages/<video>/<frame>.jpg and {folder}/{split}.json")


_TOY_MANUAL = "run `clipvis data --benchmark toy` to generate the toy world"

# ---------------------------------------------------------------- the registry

_BENCHMARKS = (
    Benchmark(
        "lvvis_val", "video", "val", "lvvis/val/JPEGImages", "lvvis/val/val_instances_.json", "lvvis",
        novel_split="partition", scorer="lvvis",
        manual=(f"download 'Validation Videos' and 'Validation Annotations' (Google Drive links in {_LVVIS_README}); "
                "unpack the frames to lvvis/val/JPEGImages/<video>/<frame>.jpg and save the annotations "
                "(val_instances.json) as lvvis/val/val_instances_.json, the name CLIP-VIS reads")),
    Benchmark(
        "lvvis_test", "video", "test", "lvvis/test/JPEGImages", "lvvis/test/test_instances.json", "lvvis",
        novel_split="partition", scorer="lvvis", has_public_gt=False,
        server=f"LV-VIS test server on Codabench (linked from {_LVVIS_README})",
        manual=(f"download 'Test Videos' (Google Drive link in {_LVVIS_README}); unpack the frames to "
                "lvvis/test/JPEGImages/<video>/<frame>.jpg and put the video list (no annotations) at "
                "lvvis/test/test_instances.json")),
    Benchmark(
        "ytvis19_val", "video", "val", "ytvis2019/valid/JPEGImages", "ytvis2019/valid.json", "ytvis19",
        scorer="ytvis", has_public_gt=False, server=f"YouTube-VIS 2019 server ({_YTVIS19_SITE})",
        manual=_ytvis_manual(_YTVIS19_SITE, "ytvis2019", "valid")),
    Benchmark(
        "ytvis21_val", "video", "val", "ytvis2021/valid/JPEGImages", "ytvis2021/valid.json", "ytvis21",
        scorer="ytvis", has_public_gt=False, server=f"YouTube-VIS 2021 server ({_YTVIS21_SITE})",
        manual=_ytvis_manual(_YTVIS21_SITE, "ytvis2021", "valid")),
    Benchmark(
        "ovis_val", "video", "val", "ovis/valid", "ovis/annotations_valid.json", "ovis",
        scorer="ytvis", has_public_gt=False, server=f"OVIS server ({_OVIS_SITE})",
        manual=(f"register at {_OVIS_SITE} (Participate), download the valid frames and annotations_valid.json, "
                "and put them at ovis/valid/<video>/<frame>.jpg and ovis/annotations_valid.json")),
    Benchmark(
        "burst_val", "video", "val", "burst/val", "burst/val/b2y_val.json", "burst",
        novel_split="frequency", uncommon_split="split", scorer="burst", derived=BURST_VAL,
        manual=("download the TAO validation frames (https://motchallenge.net/tao_download.php; AVA and HACS "
                "need a MOTChallenge login) to burst/val/<dataset>/<sequence>/<frame>.jpg, and the BURST "
                "annotations (https://omnomnom.vision.rwth-aachen.de/data/BURST/annotations.zip, no pinned "
                "checksum) unpacked to burst/annotations/; `clipvis data --benchmark burst_val` then writes "
                "burst/val/b2y_val.json from burst/annotations/val/all_classes.json and "
                "burst/annotations/info/class_split.json")),
    Benchmark(
        "lvis_train_norare", "image", "train", "coco", "lvis/lvis_v1_train_norare.json", "lvis",
        novel_split="frequency", downloads=(LVIS_TRAIN_ANNOTATIONS, COCO_TRAIN_IMAGES), derived=LVIS_NORARE,
        manual=("`clipvis data --benchmark lvis_train_norare` downloads the COCO train2017 images "
                "(coco/train2017/) and lvis/lvis_v1_train.json, then writes lvis/lvis_v1_train_norare.json: "
                "lvis_v1_train.json without the annotations of rare ('frequency': 'r') categories, images kept")),
    Benchmark(
        "coco_train", "image", "train", "coco/train2017", "coco/annotations/instances_train2017.json", "coco",
        downloads=(COCO_ANNOTATIONS, COCO_TRAIN_IMAGES),
        manual=("`clipvis data --benchmark coco_train` downloads them from https://cocodataset.org; "
                "by hand: unzip train2017.zip and annotations_trainval2017.zip into coco/")),
    Benchmark(
        "ytvis19_train", "video", "train", "ytvis2019/train/JPEGImages", "ytvis2019/train.json", "ytvis19",
        manual=_ytvis_manual(_YTVIS19_SITE, "ytvis2019", "train")),
    Benchmark("toy_lvis_train", "image", "train", "toy/toy_lvis_train/images",
              "toy/toy_lvis_train/annotations.json", "toy", novel_split="partition", manual=_TOY_MANUAL),
    Benchmark("toy_lvis_val", "image", "val", "toy/toy_lvis_val/images", "toy/toy_lvis_val/annotations.json",
              "toy", novel_split="partition", manual=_TOY_MANUAL),
    Benchmark("toy_ytvis_train", "video", "train", "toy/toy_ytvis_train/JPEGImages",
              "toy/toy_ytvis_train/annotations.json", "toy", novel_split="partition", manual=_TOY_MANUAL),
    Benchmark("toy_lvvis", "video", "val", "toy/toy_lvvis/JPEGImages", "toy/toy_lvvis/annotations.json", "toy",
              novel_split="partition", scorer="lvvis", manual=_TOY_MANUAL),
    Benchmark("toy_ovis", "video", "val", "toy/toy_ovis/JPEGImages", "toy/toy_ovis/annotations.json", "toy",
              novel_split="partition", scorer="ytvis", manual=_TOY_MANUAL),
    Benchmark("toy_captions", "image", "train", "toy/toy_captions/images", "toy/toy_captions/captions.json",
              "toy", manual=_TOY_MANUAL),
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in _BENCHMARKS}
PAPER_BENCHMARKS = tuple(b.name for b in _BENCHMARKS if not b.is_toy)
TOY_BENCHMARKS = tuple(b.name for b in _BENCHMARKS if b.is_toy)


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise InputError("--benchmark", name, f"unknown benchmark; known: {', '.join(BENCHMARKS)}") from None


@dataclass(frozen=True)
class MissingPath:
    path: Path
    is_dir: bool


def missing_paths(benchmark: Benchmark, root: str | Path) -> list[MissingPath]:
    """The benchmark's annotation file and image folder that are not under `root` (empty: all present)."""
    missing = []
    if not benchmark.annotation_path(root).is_file():
        missing.append(MissingPath(benchmark.annotation_path(root), is_dir=False))
    if not benchmark.image_path(root).is_dir():
        missing.append(MissingPath(benchmark.image_path(root), is_dir=True))
    return missing
