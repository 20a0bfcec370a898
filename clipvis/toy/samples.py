"""A picture of the toy world: frames of toy_lvvis and toy_ovis with their ground-truth masks and names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_api
from PIL import Image

from clipvis.files import atomic_path, read_json

DEFAULT_SAMPLES_PATH = Path("reports/toy_world_samples.png")  # relative to the working directory
SAMPLE_SETS = ("toy_lvvis", "toy_ovis")
OVERLAY_ALPHA = 0.2  # light, so that the objects' own colours stay readable
OUTLINE_WIDTH = 2  # pixels


def write_toy_samples(toy_dir: Path, out_path: Path = DEFAULT_SAMPLES_PATH, videos: int = 2, frames: int = 5) -> Path:
    """Save a grid (one row per video, `videos` per set, `frames` evenly spaced columns) read back from
    the written annotation files: each instance's visible mask is a coloured overlay with its category
    name; novel categories are marked with *."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = []  # (label, [(time, image (H, W, 3) uint8, [(name, colour, mask (H, W) bool)])])
    for dataset in SAMPLE_SETS:
        data = read_json(Path(toy_dir) / dataset / "annotations.json")
        names = {c["id"]: c["name"] + ("*" if c.get("partition", 0) >= 2 else "") for c in data["categories"]}
        for video in data["videos"][:videos]:
            tracks = [a for a in data["annotations"] if a["video_id"] == video["id"]]
            cells = []
            for t in np.linspace(0, video["length"] - 1, frames).round().astype(int):
                image = np.asarray(Image.open(Path(toy_dir) / dataset / "JPEGImages" / video["file_names"][t]))
                instances = [(names[a["category_id"]], colormaps["tab10"](k % 10)[:3],
                              mask_api.decode(a["segmentations"][t]).astype(bool))
                             for k, a in enumerate(tracks) if a["segmentations"][t] is not None]
                cells.append((t, image, instances))
            rows.append((f"{dataset}\nvideo {video['id']}", cells))

    columns = max((len(cells) for _, cells in rows), default=1)
    figure = Figure(figsize=(2.4 * columns, 2.1 * max(len(rows), 1)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(len(rows), 1), columns, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, (label, cells) in enumerate(rows):
        axes[r, 0].set_ylabel(label, fontsize=8)
        for c, (t, image, instances) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(_overlay(image, instances))
            ax.set_title(f"frame {t}", fontsize=7)
            for name, colour, mask in instances:
                ys, xs = np.nonzero(mask)
                ax.text(xs.mean(), ys.mean(), name, fontsize=5, ha="center", va="center", color="white",
                        bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.8, "linewidth": 0})
    figure.suptitle("toy world: ground-truth visible masks (* = novel category)", fontsize=9)
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return Path(out_path)


def _overlay(image: np.ndarray, instances: list) -> np.ndarray:
    """(H, W, 3) float image with each mask lightly tinted in its colour and outlined."""
    out = image.astype(np.float32) / 255
    for _, colour, mask in instances:
        out[mask] = (1 - OVERLAY_ALPHA) * out[mask] + OVERLAY_ALPHA * np.array(colour)
        inner = mask.copy()
        for _ in range(OUTLINE_WIDTH):  # erode by one pixel in the four directions
            shrunk = inner.copy()
            shrunk[1:] &= inner[:-1]
            shrunk[:-1] &= inner[1:]
            shrunk[:, 1:] &= inner[:, :-1]
            shrunk[:, :-1] &= inner[:, 1:]
            inner = shrunk
        out[mask & ~inner] = colour
    return out
