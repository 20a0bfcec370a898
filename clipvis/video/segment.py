"""Open-vocabulary segmentation of any video or frame folder (`clipvis segment`)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from clipvis.config import Config
from clipvis.model.checkpoint import inference_device, load_model
from clipvis.model.text_classifier import inference_text_embeddings
from clipvis.video.frames import FrameSource
from clipvis.video.inference import segment_video


def segment_frames(source: FrameSource, class_names: list[str], cfg: Config, checkpoint: str | Path | None) -> list[dict]:
    """Result records of a video (any FrameSource) for a vocabulary, each with `category_name`; category ids
    are 1-based vocabulary positions. `checkpoint` None: random weights."""
    model = load_model(cfg, checkpoint, inference_device(cfg.infer.device))
    text = inference_text_embeddings(model.clip, class_names, cfg.clip.text_cache)
    with tqdm(total=source.length, unit="frame", desc=f"segment {source.name}") as bar:
        records = segment_video(model, source, text, cfg, video_id=1, on_frames=bar.update)
    for record in records:
        record["category_name"] = class_names[record["category_id"] - 1]
    return records
