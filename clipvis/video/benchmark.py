"""Inference over every video of a benchmark (`clipvis infer`) -> DIR/results.json.

Each finished video's records are written atomically (fsynced) to DIR/progress/<video_id>.jsonl: a
header line with the digest of what made them (benchmark, checkpoint hash, the settings that change
results), then one record per line, each written as it comes from `stream_video_variants` (no whole
video's output is held in memory). So a killed run resumes at the next unfinished video, and a rerun
with another checkpoint or other settings redoes every video instead of mixing them in; a damaged
progress file is redone too
(DIR/progress/settings.json shows the settings in full). DIR/results.json (all videos, in annotation
order) and DIR/config.yaml are written at the end, atomically. DIR is locked while a run writes it: a
second run on the same DIR stops at once with a message.

With `--variants A B ...` (names in params/variants.yaml: test-time matching/scoring settings) the
network runs once per frame for all of them and each variant gets its own folder DIR/<variant>/
(results.json, progress/, config.yaml); DIR/variants.json, written last, lists them.

DIR/matching.json says how much temporal matching acted: over all frames after a video's first, the
number of track slots showing an object (object probability >= 0.5) and how many of them took
another query than in the previous frame (`clipvis.video.inference.SlotSwitches`). For a benchmark
without public ground truth, each results.json is also zipped as submission.zip for the official server.

MLflow: one "infer <benchmark>" run (the speed: fps, seconds per part); with variants, its params are
those all variants share and each variant has a nested run with its whole config and the shared fps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from clipvis.config import save_config, to_dict
from clipvis.data.formats import JsonChecker
from clipvis.data.registry import get_benchmark, missing_paths, resolve_root
from clipvis.data.vocabularies import categories
from clipvis.errors import InputError
from clipvis.files import atomic_path, file_sha256, output_lock, read_json, relative_file_name, write_json
from clipvis.layout import CONFIG_FILE, MATCHING_FILE, PROGRESS_DIR, RESULTS_FILE, SETTINGS_FILE, SUBMISSION_FILE
from clipvis.model.checkpoint import inference_device, load_model
from clipvis.model.text_classifier import inference_text_embeddings
from clipvis.tracking import shared_params, stage_run
from clipvis.video import inference
from clipvis.video.frames import image_file_frames
from clipvis.video.inference import SlotSwitches

log = logging.getLogger(__name__)


def infer_benchmark(cfg, benchmark_name: str, checkpoint: str | Path, out_dir: str | Path,
                    root: str | Path | None = None, tracking: bool = True) -> dict[str, Path]:
    """Run (or resume) inference on every video of `benchmark_name`.

    `cfg` is one Config (output in `out_dir`) or {variant name: Config} (output in out_dir/<name>);
    returns {variant: results.json path}, with "" for the single config.
    """
    named = isinstance(cfg, dict)
    variants = cfg if named else {"": cfg}
    cfg = next(iter(variants.values()))
    out_dirs = {name: Path(out_dir) / name for name in variants}
    benchmark = get_benchmark(benchmark_name)
    root = resolve_root(root, cfg.data.root)
    _require_video_benchmark(benchmark, root)
    annotation_path, image_root = benchmark.annotation_path(root), benchmark.image_path(root)
    videos = benchmark_videos(annotation_path)
    if not Path(checkpoint).is_file():
        raise InputError(checkpoint, "", "checkpoint not found")

    checkpoint_sha256 = file_sha256(checkpoint)
    settings = {name: {"benchmark": benchmark.name, "checkpoint_sha256": checkpoint_sha256,
                       "clip": to_dict(c.clip) | {"text_cache": None}, "model": to_dict(c.model),
                       "matching": to_dict(c.matching), "scoring": to_dict(c.scoring),
                       "resize": [c.infer.min_size, c.infer.max_size, c.infer.resize]} for name, c in variants.items()}
    progress = {name: Progress(out_dirs[name] / PROGRESS_DIR, settings[name]) for name in variants}

    with output_lock(out_dir):
        device = inference_device(cfg.infer.device)
        model = load_model(cfg, checkpoint, device)
        vocabulary = categories(benchmark, root)
        text = inference_text_embeddings(model.clip, [c["name"] for c in vocabulary], cfg.clip.text_cache)
        category_ids = [c["id"] for c in vocabulary]
        for name, variant in variants.items():
            save_config(variant, out_dirs[name] / CONFIG_FILE)
            write_json(out_dirs[name] / PROGRESS_DIR / SETTINGS_FILE, settings[name], indent=1)

        todo = [video for video in videos if not all(p.load(video) for p in progress.values())]
        if len(todo) < len(videos):
            log.info("resuming: %d of %d videos already done", len(videos) - len(todo), len(videos))
        timings: dict[str, float] = {}
        tags = {"benchmark": benchmark.name}
        tracker = (stage_run(cfg, "infer", run_name=f"infer {benchmark.name}", tags=tags,
                             params=shared_params(list(variants.values()))) if tracking else contextlib.nullcontext())
        with tracker as mlflow:
            total = sum(len(video["file_names"]) for video in videos)
            bar = tqdm(total=total, initial=total - sum(len(video["file_names"]) for video in todo), unit="frame",
                       desc=f"infer {benchmark.name}")
            frames_done, started = 0, time.perf_counter()
            for video in todo:
                frames = image_file_frames([image_root / name for name in video["file_names"]], video["height"],
                                           video["width"], listed_in=annotation_path, name=str(video["id"]))
                switches: dict[str, inference.SlotSwitches] = {}
                with inference.stream_video_variants(model, frames, text, variants, video["id"], category_ids,
                                                     timings, on_frames=bar.update, switches=switches) as records:
                    for name in variants:
                        progress[name].save(video, records[name], switches[name])
                frames_done += len(video["file_names"])
            bar.close()
            seconds = time.perf_counter() - started
            results_paths = {name: _gather_results(out_dirs[name] / RESULTS_FILE, progress[name], videos)
                             for name in variants}
            switch_rates = {name: _write_matching_summary(out_dirs[name] / MATCHING_FILE, progress[name], videos)
                            for name in variants}
            if not benchmark.has_public_gt:
                for path in results_paths.values():
                    _zip_for_server(path)
            if mlflow and frames_done:
                mlflow.log_metrics({"fps": frames_done / seconds, "frames": frames_done, "videos": len(todo),
                                    **{f"seconds_{part}": value for part, value in timings.items()}})
            if mlflow and named:
                for name, variant in variants.items():
                    with stage_run(variant, "infer", run_name=name, nested=True,
                                   tags=tags | {"variant": name}) as child:
                        if frames_done:
                            child.log_metrics({"fps": frames_done / seconds})
                        if switch_rates[name] is not None:
                            child.log_metrics({"slot_switch_rate": switch_rates[name]})
                        child.log_artifact(str(out_dirs[name] / CONFIG_FILE))
            elif mlflow:
                if switch_rates[""] is not None:
                    mlflow.log_metrics({"slot_switch_rate": switch_rates[""]})
                mlflow.log_artifact(str(out_dirs[""] / CONFIG_FILE))
    log.info("%d videos, %d frames in %.1f s; results in %s", len(todo), frames_done, seconds,
             ", ".join(str(path) for path in results_paths.values()))
    return results_paths


def benchmark_videos(path: Path) -> list[dict]:
    """The `videos` of a YTVIS-style file (annotations not needed: test sets have none), checked."""
    data = read_json(path)
    checker = JsonChecker(path)
    checker.check(data, "object", "")
    videos = checker.records(data, "videos")
    checker.index_by_id(videos, "videos")
    for i, video in enumerate(videos):
        where = f"videos[{i}]"
        checker.get(video, "height", where, "positive int")
        checker.get(video, "width", where, "positive int")
        if not checker.get(video, "file_names", where, "str list"):
            checker.fail(f"{where}.file_names", "the video has no frames")
        for t, name in enumerate(video["file_names"]):
            relative_file_name(name, path, f"{where}.file_names[{t}]")
    return videos


def _require_video_benchmark(benchmark, root: Path) -> None:
    if benchmark.kind != "video":
        raise InputError("--benchmark", benchmark.name, "is an image benchmark; infer runs on video benchmarks")
    for missing in missing_paths(benchmark, root):
        how = f"; {benchmark.manual}" if benchmark.manual else ""
        raise InputError(missing.path, "", f"{'folder' if missing.is_dir else 'file'} of {benchmark.name} "
                                           f"is missing{how}")


class Progress:
    """The finished videos of one output folder: PROGRESS_DIR/<video id>.jsonl, one file per video, a header
    line carrying the digest of the settings that made it, then one record per line. A file that is
    unreadable, of other settings or not a whole video's results does not count: its video is run again."""

    def __init__(self, folder: Path, settings: dict):
        self.folder = folder
        self.digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def path(self, video: dict) -> Path:
        return self.folder / f"{video['id']}.jsonl"

    def save(self, video: dict, records: Iterable[dict], switches) -> None:
        """Write the header, then each record as it comes (one in memory at a time)."""
        header = {"settings": self.digest, "video_id": video["id"], "frames": len(video["file_names"]),
                  "switches": asdict(switches)}
        with atomic_path(self.path(video)) as tmp, tmp.open("w") as out:
            out.write(json.dumps(header) + "\n")
            for record in records:
                out.write(json.dumps(record) + "\n")

    def load(self, video: dict) -> dict | None:
        """The header of `video`'s saved progress once every record has been checked, or None (with a warning
        for a file that is there but unusable)."""
        path = self.path(video)
        if not path.exists():
            return None
        try:
            with path.open() as lines:
                header = json.loads(next(lines, "null"))
                problem = self._problem(header, lines, video)
        except (OSError, ValueError, RecursionError):
            problem = "damaged (unreadable)"
        if problem:
            log.warning("%s: %s; the video is run again", path, problem)
            return None
        return header

    def _problem(self, header, records: Iterator[str], video: dict) -> str | None:
        """What is wrong with a progress file (its parsed header, then its record lines), or None."""
        if not isinstance(header, dict):
            return "damaged (not a progress file)"
        if header.get("settings") != self.digest:
            return "made with other settings (checkpoint, model, matching, scoring or resize)"
        frames = len(video["file_names"])
        if header.get("video_id") != video["id"] or header.get("frames") != frames:
            return "belongs to another video"
        switches = header.get("switches")
        if not (isinstance(switches, dict) and all(isinstance(switches.get(k), int) for k in ("object_slots", "switches"))):
            return "damaged (no slot-switch counts)"
        for line in records:
            record = json.loads(line)
            if not (isinstance(record, dict) and record.get("video_id") == video["id"]
                    and isinstance(record.get("segmentations"), list) and len(record["segmentations"]) == frames):
                return "damaged (a record is not one of this video's results)"
        return None

    def loaded(self, videos: list[dict]) -> Iterator[tuple[dict, Path]]:
        """Every video's progress header and file, in order; a missing or damaged one now is an error (it was
        just written)."""
        for video in videos:
            header = self.load(video)
            if header is None:
                raise InputError(self.path(video), "", "progress of this video is missing or damaged; run again "
                                                       "to redo it")
            yield header, self.path(video)


def _zip_for_server(results: Path) -> Path:
    """results.json zipped beside it, as the official evaluation servers take it."""
    path = results.with_name(SUBMISSION_FILE)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(results, RESULTS_FILE)
    return path


def _write_matching_summary(path: Path, progress: Progress, videos: list[dict]) -> float | None:
    """Sum the videos' slot switches into `path`; returns the switch rate (None: no slot showed an object)."""
    total = SlotSwitches()
    for header, _ in progress.loaded(videos):
        total.add(SlotSwitches(**header["switches"]))
    write_json(path, {**asdict(total), "switch_rate": total.rate()}, indent=1)
    return total.rate()


def _gather_results(path: Path, progress: Progress, videos: list[dict]) -> Path:
    """Concatenate the videos' records into one JSON list (annotation order), one record in memory at a time."""
    with atomic_path(path) as tmp, tmp.open("w") as out:
        out.write("[")
        first = True
        for _, progress_path in progress.loaded(videos):
            with progress_path.open() as lines:
                next(lines)  # the header
                for line in lines:
                    out.write(("" if first else ",") + line.rstrip("\n"))
                    first = False
        out.write("]")
    return path
