"""Figures of the report: the Table V T x K heatmap and the training-loss curves (from MLflow).

Every PNG is written atomically; matplotlib runs headless (Agg).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipvis import layout
from clipvis.files import atomic_path, read_yaml
from clipvis.reports.paper_numbers import R50_LVIS, TABLE5, TK_PAPER, Scale, tk_variant
from clipvis.reports.tables import measure

log = logging.getLogger(__name__)

DPI = 100
CELL_INCHES = 0.8  # one heatmap cell
# Margins around each heatmap panel: left (T labels), right (gap), bottom (K labels), top (title).
LEFT_INCHES, RIGHT_INCHES, BOTTOM_INCHES, TOP_INCHES = 1.0, 0.3, 0.55, 0.55
HEATMAP_COLUMN = TABLE5.columns[0]  # LV-VIS AP (toy_lvvis at toy scale)


# ------------------------------------------------------------------------------------ T x K heatmap


@dataclass(frozen=True)
class TKGrid:
    memories: list[int]  # T, one per grid row
    topks: list[int]  # K, one per grid column
    ours: np.ndarray  # (T, K) AP x 100; NaN where not measured
    paper: np.ndarray  # (T, K) AP; NaN where the paper has no such (T, K)

    @property
    def in_grid(self) -> np.ndarray:
        return ~np.isnan(self.paper)


def tk_grid(scale: Scale, runs_dir: str | Path) -> TKGrid:
    """Our LV-VIS AP for every (T, K) of the paper's grid, beside the paper's."""
    memories = sorted({t for t, _ in TK_PAPER})
    topks = sorted({k for _, k in TK_PAPER})
    ours = np.full((len(memories), len(topks)), np.nan)
    paper = np.full_like(ours, np.nan)
    for (t, k), numbers in TK_PAPER.items():
        i, j = memories.index(t), topks.index(k)
        paper[i, j] = numbers[0]
        cell = measure(Path(runs_dir), scale, R50_LVIS[scale], tk_variant(t, k), HEATMAP_COLUMN)
        if cell.value is not None:
            ours[i, j] = cell.value
    return TKGrid(memories, topks, ours, paper)


def heatmap_size_px(rows: int, columns: int) -> tuple[int, int]:
    """(width, height) in pixels of the two-panel heatmap of a rows x columns grid."""
    width = 2 * (LEFT_INCHES + columns * CELL_INCHES + RIGHT_INCHES)
    height = BOTTOM_INCHES + rows * CELL_INCHES + TOP_INCHES
    return round(width * DPI), round(height * DPI)


def plot_tk_heatmap(grid: TKGrid, benchmark: str, path: str | Path) -> Path:
    """Ours and the paper's AP over (T, K), side by side; missing runs hatched, cells off the grid blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows, columns = grid.ours.shape
    width, height = (size / DPI for size in heatmap_size_px(rows, columns))  # inches
    figure = plt.figure(figsize=(width, height), dpi=DPI)  # saved without a tight bbox: the size is exact
    panels = ((grid.ours, f"ours: AP on {benchmark}"), (grid.paper, "paper: AP on LV-VIS val"))
    for index, (values, title) in enumerate(panels):
        x0 = index * width / 2 + LEFT_INCHES  # inches
        axes = figure.add_axes((x0 / width, BOTTOM_INCHES / height, columns * CELL_INCHES / width,
                                rows * CELL_INCHES / height))
        finite = values[~np.isnan(values)]
        axes.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto",
                    vmin=finite.min() if finite.size else 0, vmax=finite.max() if finite.size else 1)
        axes.set_facecolor("white")
        for i in range(rows):
            for j in range(columns):
                if not grid.in_grid[i, j]:
                    continue
                if np.isnan(values[i, j]):
                    axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="grey"))
                    axes.text(j, i, "missing", ha="center", va="center", fontsize=8, color="dimgrey")
                else:
                    shade = (values[i, j] - finite.min()) / max(finite.max() - finite.min(), 1e-9)
                    axes.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=9,
                              color="black" if shade > 0.5 else "white")
        axes.set_xticks(range(columns), [str(k) for k in grid.topks])
        axes.set_yticks(range(rows), [str(t) for t in grid.memories])
        axes.set_xlabel("K (selected frames)")
        axes.set_ylabel("T (memory)")
        axes.set_title(title, fontsize=10)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    plt.close(figure)
    return Path(path)


# ------------------------------------------------------------------------------------ training curves


def trained_models(scale: Scale, runs_dir: str | Path) -> list[str]:
    """Models with a training folder: runs/{scale}/{model}/train/config.yaml (saved by `clipvis train`)."""
    return [config.parent.parent.name for config in layout.find(layout.train_dir(runs_dir, scale, "*") / layout.CONFIG_FILE)]


def plot_training_curves(history: dict[str, dict[int, float]], title: str, path: str | Path) -> Path:
    """Each loss against the iteration, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=DPI)
    for key in sorted(history, key=lambda name: (name != "total", name)):
        steps = sorted(history[key])
        axes.plot(steps, [history[key][step] for step in steps], label=key, linewidth=2 if key == "total" else 1)
    axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    plt.close(figure)
    return Path(path)


def write_training_curves(scale: Scale, runs_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """out_dir/train_{model}.png for every trained model that has losses in the MLflow store."""
    models = trained_models(scale, runs_dir)
    if not models:
        return {}
    from clipvis.tracking import training_history, tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        log.warning("no MLflow store at %s: no training curves", uri)
        return {}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    written = {}
    for model in models:
        history = training_history(client, read_yaml(layout.train_dir(runs_dir, scale, model) / layout.CONFIG_FILE), scale)
        if not history:
            log.warning("no training losses in MLflow for %s/%s", scale, model)
            continue
        written[model] = plot_training_curves(history, f"{model} ({scale}): training losses",
                                              Path(out_dir) / f"train_{model}.png")
    return written
