"""`clipvis eval-images`: image-level mask AP of a trained checkpoint on held-out images (toy_lvis_val).

Every image of the dataset is segmented as the CLIP-VIS image model does (`image_ap.segment_image`)
and scored with COCOeval (`image_ap.image_ap`). Writes to DIR, each file atomically:

- results.json: COCO/LVIS instance-segmentation results ``[{image_id, category_id, score,
  segmentation: RLE}]``;
- metrics.json: ``{"dataset", "checkpoint", "detections_per_image", "counts", "metrics", "per_category"}``
  with AP, AP50, AP75, APb, APn as fractions (null where no category of the group has ground truth);
- config.yaml: the resolved config.

The metrics are logged to MLflow (stage "eval_images").
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from clipvis.commands.arguments import add_config_arguments, check_output_folder, config_from_arguments
from clipvis.errors import InputError

log = logging.getLogger(__name__)

HELP = "image-level mask AP (AP, AP50, AP75, APb, APn) of a checkpoint on held-out images"

DEFAULT_DATASET = "toy_lvis_val"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.json"
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APb", "APn")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="trained or imported segmenter checkpoint (.pt)")
    add_config_arguments(parser, "params YAML (default: the checkpoint's own config)")
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help=f"registered image benchmark with ground truth (default: {DEFAULT_DATASET})")
    parser.add_argument("--root", help="data root (default: $CLIPVIS_DATA, else the config's data.root)")
    parser.add_argument("--out", required=True, help="output folder (results.json, metrics.json, config.yaml)")


def main(args) -> int:
    from clipvis.files import output_lock

    cfg = config_from_arguments(args)
    check_output_folder(args.out)
    with output_lock(args.out):
        report = evaluate_images(cfg, args.dataset, args.checkpoint, args.out, root=args.root)
    metrics = report["metrics"]
    print("  ".join(f"{key} {'-' if metrics[key] is None else f'{metrics[key]:.4f}'}" for key in SUMMARY_KEYS))
    print(f"wrote {Path(args.out) / RESULTS_FILE} and {Path(args.out) / METRICS_FILE}")
    return 0


def evaluate_images(cfg, dataset: str, checkpoint: str | Path, out_dir: str | Path, root: str | Path | None = None,
                    tracking: bool = True) -> dict:
    """Segment every image of `dataset` with `checkpoint`, score mask AP; write DIR's files; return metrics.json."""
    from tqdm import tqdm

    from clipvis.config import save_config
    from clipvis.data.registry import resolve_root
    from clipvis.data.datasets import image_file_name, read_rgb
    from clipvis.data.formats import load_image_gt
    from clipvis.data.vocabularies import categories, category_groups
    from clipvis.evaluation.image_ap import image_ap, segment_image
    from clipvis.files import write_json
    from clipvis.model.text_classifier import text_embeddings
    from clipvis.tracking import stage_run
    from clipvis.model.checkpoint import load_model
    from clipvis.video.inference import inference_device

    root = resolve_root(root, cfg.data.root)
    benchmark = image_benchmark(dataset, root)
    if not Path(checkpoint).is_file():
        raise InputError(checkpoint, "", "checkpoint not found")
    annotation_path, image_root = benchmark.annotation_path(root), benchmark.image_path(root)
    gt = load_image_gt(annotation_path)
    groups = category_groups(benchmark, root)

    model = load_model(cfg, checkpoint, inference_device(cfg.infer.device))
    vocabulary = categories(benchmark, root)
    text = text_embeddings(model.clip, [c["name"] for c in vocabulary], cfg.clip.text_cache)
    category_ids = [c["id"] for c in vocabulary]
    out_dir = Path(out_dir)
    save_config(cfg, out_dir / "config.yaml")

    tracker = (stage_run(cfg, "eval_images", run_name=f"eval_images {dataset}", tags={"benchmark": dataset})
               if tracking else contextlib.nullcontext())
    with tracker as mlflow:
        results, started = [], time.perf_counter()
        for i, image in enumerate(tqdm(gt["images"], desc=f"eval-images {dataset}", unit="image")):
            path = image_root / image_file_name(image, annotation_path, f"images[{i}]")
            pixels = read_rgb(path, image["height"], image["width"], annotation_path)
            results += segment_image(model, pixels, text, cfg.scoring, cfg.infer, image["id"], category_ids)
        seconds = time.perf_counter() - started
        write_json(out_dir / RESULTS_FILE, results)

        scored = image_ap(gt, results, {"APb": groups.get("base", set()), "APn": groups.get("novel", set())})
        report = {
            "dataset": dataset,
            "checkpoint": str(checkpoint),
            "detections_per_image": cfg.scoring.detections_per_image,
            "counts": {"images": len(gt["images"]), "categories": len(scored.per_category),
                       "categories_with_gt": sum(row["num_gt"] > 0 for row in scored.per_category),
                       "gt_instances": len(gt["annotations"]), "predictions": len(results)},
            "metrics": scored.metrics,
            "per_category": scored.per_category,
        }
        write_json(out_dir / METRICS_FILE, report, indent=2)
        if mlflow:
            mlflow.log_metrics({key: value for key, value in scored.metrics.items() if value is not None}
                               | {"images_per_second": len(gt["images"]) / seconds})
            mlflow.log_artifact(str(out_dir / METRICS_FILE))
    log.info("%d images in %.1f s; AP %s", len(gt["images"]), seconds, scored.metrics["AP"])
    return report


def image_benchmark(name: str, root: Path):
    """The registered image benchmark `name`, with ground truth, present under `root`; else InputError."""
    from clipvis.data.registry import BENCHMARKS, missing_paths

    usable = [b.name for b in BENCHMARKS.values() if b.kind == "image" and b.role != "train" and b.has_public_gt]
    benchmark = BENCHMARKS.get(name)
    if benchmark is None or benchmark.name not in usable:
        what = ("unknown dataset" if benchmark is None else "a video benchmark" if benchmark.kind == "video"
                else "a training set" if benchmark.role == "train" else "without public ground truth")
        raise InputError("--dataset", name, f"{what}; eval-images scores held-out image sets with ground truth "
                                            f"(registered: {', '.join(usable) or 'none'})")
    for missing in missing_paths(benchmark, root):
        raise InputError(missing.path, "", f"{'folder' if missing.is_dir else 'file'} of {name} is missing; "
                                           f"{benchmark.manual}")
    return benchmark
