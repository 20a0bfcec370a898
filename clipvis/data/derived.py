"""Annotation files the pipeline writes from downloaded ones: LVIS v1 train without its rare categories
(the open-vocabulary training set), and BURST val in YTVIS style (what the video scorer reads).

Each is a `Derivation`: source files under the data root and a function that writes the target
atomically. `clipvis data` runs it when the target is missing and the sources are there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from clipvis.data.burst import write_burst_conversion
from clipvis.data.formats import JsonChecker
from clipvis.files import read_json, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Derivation:
    sources: tuple[str, ...]  # relative to the data root
    write: Callable[..., None]  # write(*source paths, target path)
    description: str


def write_lvis_without_rare(lvis_json: str | Path, out_json: str | Path) -> None:
    """LVIS with every annotation of a rare ('frequency': 'r') category removed; images and categories kept."""
    data = read_json(lvis_json)
    checker = JsonChecker(lvis_json)
    checker.check(data, "object", "")
    categories = checker.records(data, "categories")
    for i, category in enumerate(categories):
        checker.get(category, "frequency", f"categories[{i}]", "frequency")
    rare = {category["id"] for category in categories if category["frequency"] == "r"}
    annotations = checker.records(data, "annotations")
    kept = [annotation for annotation in annotations if annotation.get("category_id") not in rare]
    log.info("%s: %d of %d annotations kept (%d rare categories removed)", lvis_json, len(kept),
             len(annotations), len(rare))
    write_json(out_json, {**data, "annotations": kept})


LVIS_NORARE = Derivation(("lvis/lvis_v1_train.json",), write_lvis_without_rare,
                         "LVIS v1 train without the annotations of rare categories")
BURST_VAL = Derivation(("burst/annotations/val/all_classes.json", "burst/annotations/info/class_split.json"),
                       write_burst_conversion, "BURST val converted to YTVIS style")


def derive(derivation: Derivation, target: Path, root: Path) -> bool:
    """Write `target` from the sources under `root` if they are all there; returns whether it did."""
    sources = [root / source for source in derivation.sources]
    if not all(source.is_file() for source in sources):
        return False
    log.info("writing %s (%s)", target, derivation.description)
    derivation.write(*sources, target)
    return True


def derive_missing(benchmarks, root: Path) -> None:
    """Write the benchmarks' derived annotation files that are missing and whose sources are present."""
    for benchmark in benchmarks:
        if benchmark.derived and not benchmark.annotation_path(root).is_file():
            derive(benchmark.derived, benchmark.annotation_path(root), root)
