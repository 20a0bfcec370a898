"""Image-level mask AP of a checkpoint (`clipvis eval-images`) on held-out images (toy_lvis_val).

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

from tqdm import tqdm

from clipvis.config import save_config
from clipvis.data.datasets import image_file_name, read_rgb
from clipvis.data.formats import load_image_gt
from clipvis.data.registry import BENCHMARKS, missing_paths, resolve_root
from clipvis.data.vocabularies import categories, category_groups
from clipvis.errors import InputError
from clipvis.evaluation.image_ap import image_ap, segment_image
from clipvis.files import write_json
from clipvis.layout import CONFIG_FILE, METRICS_FILE, RESULTS_FILE
from clipvis.model.checkpoint import inference_device, load_model
from clipvis.model.text_classifier import inference_text_embeddings
from clipvis.tracking import stage_run

log = logging.getLogger(__name__)

def evaluate_images(cfg, dataset: str, checkpoint: str | Path, out_dir: str | Path, root: str | Path | None = None,
                    tracking: bool = True) -> dict:
    """Segment every image of `dataset` with `checkpoint`, score mask AP; write DIR's files; return metrics.json."""
    root = resolve_root(root, cfg.data.root)
    benchmark = image_benchmark(dataset, root)
    if not Path(checkpoint).is_file():
        raise InputError(checkpoint, "", "checkpoint not found")
    annotation_path, image_root = benchmark.annotation_path(root), benchmark.image_path(root)
    gt = load_image_gt(annotation_path)
    groups = category_groups(benchmark, root)

    model = load_model(cfg, checkpoint, inference_device(cfg.infer.device))
    vocabulary = categories(benchmark, root)
    text = inference_text_embeddings(model.clip, [c["name"] for c in vocabulary], cfg.clip.text_cache)
    category_ids = [c["id"] for c in vocabulary]
    out_dir = Path(out_dir)
    save_config(cfg, out_dir / CONFIG_FILE)

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
