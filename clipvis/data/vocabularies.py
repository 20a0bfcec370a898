"""Class names used as text prompts, and the base/novel (and common/uncommon) category groups.

The real vocabularies are embedded as `clipvis/data/vocab/<name>.json`, `{"categories": [...]}`
like an annotation file (id, name and the split field), copied from the lists the CLIP-VIS code
builds its prompts from: names are kept verbatim ("bat_(animal)", "Giant_panda", "Vehical"). The
toy vocabulary is `<root>/toy/categories.json`, written with the toy world.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from clipvis.data.registry import Benchmark, get_benchmark
from clipvis.errors import InputError
from clipvis.files import read_json, read_text

log = logging.getLogger(__name__)

VOCAB_DIR = Path(__file__).parent / "vocab"

# split field -> (values of the first group, values of the second group)
_GROUPS = {
    "partition": (("base", {0, 1}), ("novel", {2, 3})),  # LV-VIS
    "frequency": (("base", {"f", "c"}), ("novel", {"r"})),  # LVIS, BURST
    "split": (("common", {"common"}), ("uncommon", {"uncommon"})),  # BURST
}


def vocabulary_path(benchmark: str | Benchmark, root: str | Path) -> Path:
    """The file the benchmark's category list is read from."""
    benchmark = _benchmark(benchmark)
    if benchmark.is_toy:
        return Path(root) / "toy" / "categories.json"
    return VOCAB_DIR / f"{benchmark.vocabulary}.json"


def categories(benchmark: str | Benchmark, root: str | Path) -> list[dict]:
    """The category records (`id`, `name`, split fields), in vocabulary order."""
    path = vocabulary_path(benchmark, root)
    if not path.is_file():
        raise InputError(path, "", "vocabulary file not found; run `clipvis data --benchmark toy` to write it")
    return read_categories(path)


def vocabulary(benchmark: str | Benchmark, root: str | Path) -> list[str]:
    """The prompt name of every category, in vocabulary (contiguous index) order."""
    return [c["name"] for c in categories(benchmark, root)]


def category_groups(benchmark: str | Benchmark, root: str | Path) -> dict[str, set[int]]:
    """Category ids per group: "base"/"novel" and, for BURST, "common"/"uncommon".

    The common/uncommon split is only in BURST's converted annotation file, so that file must exist.
    """
    benchmark = _benchmark(benchmark)
    groups = _base_novel(benchmark, root)
    if benchmark.uncommon_split:
        path = benchmark.annotation_path(root)
        if not path.is_file():
            raise InputError(path, "categories", f"file not found; it holds the common/uncommon split of "
                                                 f"{benchmark.name} (run `clipvis data --benchmark {benchmark.name}`)")
        groups |= _split(read_categories(path), benchmark.uncommon_split, path)
    return groups


def novel_ids(benchmark: str | Benchmark, root: str | Path) -> set[int]:
    """Ids of the novel categories (LV-VIS partition 2/3, LVIS/BURST rare); empty when there is no split."""
    return _base_novel(_benchmark(benchmark), root).get("novel", set())


def _base_novel(benchmark: Benchmark, root: str | Path) -> dict[str, set[int]]:
    if not benchmark.novel_split:
        return {}
    return _split(categories(benchmark, root), benchmark.novel_split, vocabulary_path(benchmark, root))


def _benchmark(benchmark: str | Benchmark) -> Benchmark:
    return get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark


def _split(records: list[dict], field: str, source: Path) -> dict[str, set[int]]:
    groups = {name: set() for name, _ in _GROUPS[field]}
    for i, category in enumerate(records):
        value = category.get(field)
        group = next((name for name, values in _GROUPS[field] if value in values), None)
        if group is None:
            allowed = sorted(str(v) for _, values in _GROUPS[field] for v in values)
            raise InputError(source, f"categories[{i}].{field}", f"expected one of {allowed}, got {value!r}")
        groups[group].add(category["id"])
    return groups


def read_categories(path: Path) -> list[dict]:
    """The `categories` list of a JSON file (validated: non-empty, unique integer ids, non-empty names)."""
    return [dict(c) for c in _cached_categories(path, path.stat().st_mtime_ns)]


@cache
def _cached_categories(path: Path, mtime_ns: int) -> tuple[dict, ...]:
    """Read once per file version: the embedded lists once, a rewritten toy file again."""
    data = read_json(path)
    records = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(records, list) or not records:
        raise InputError(path, "categories", "expected a non-empty list of categories (empty vocabulary)")
    seen: set[int] = set()
    for i, category in enumerate(records):
        if not isinstance(category, dict):
            raise InputError(path, f"categories[{i}]", "expected a category object with id and name")
        cid, name = category.get("id"), category.get("name")
        if not isinstance(cid, int) or isinstance(cid, bool) or cid in seen:
            raise InputError(path, f"categories[{i}].id", f"expected a unique integer id, got {cid!r}")
        if not isinstance(name, str) or not name.strip():
            raise InputError(path, f"categories[{i}].name", f"expected a non-empty class name, got {name!r}")
        seen.add(cid)
    return tuple(records)


def user_vocabulary(names: list[str], source: str) -> list[str]:
    """Class names a user gave (--vocab, a vocabulary file): stripped, blanks dropped, a name given twice
    kept once (with a warning: duplicates would give duplicate tracks); empty is an InputError."""
    kept: list[str] = []
    for name in (name.strip() for name in names):
        if not name:
            continue
        if name in kept:
            log.warning("%s: %r is listed twice; it is kept once", source, name)
            continue
        kept.append(name)
    if not kept:
        raise InputError(source, "", "empty vocabulary")
    return kept


def read_vocabulary_file(path: str | Path) -> list[str]:
    """One class name per line (commas inside a line separate synonyms of one class)."""
    return user_vocabulary(read_text(path).splitlines(), str(path))
