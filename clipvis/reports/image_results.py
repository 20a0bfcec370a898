"""Image-level AP of the trained models on held-out images (`clipvis eval-images`), for the report.

Read from runs/{scale}/{model}/eval_images/{dataset}/metrics.json; the paper reports no such table, so
these are ours only. Shown in index.html and listed flat in summary.json ("images/{model}/{dataset} AP").
"""

from __future__ import annotations

import html
from pathlib import Path

from clipvis import layout
from clipvis.files import read_json
from clipvis.reports.paper_numbers import Scale
from clipvis.reports.tables import format_number

METRICS = ("AP", "AP50", "AP75", "APb", "APn")


def image_metrics(scale: Scale, runs_dir: str | Path) -> dict[tuple[str, str], dict[str, float | None]]:
    """{(model, dataset): {metric: AP x 100 or None}} for every eval_images run, sorted."""
    found = {}
    for path in layout.find(layout.eval_images_dir(runs_dir, scale, "*", "*") / layout.METRICS_FILE):
        metrics = read_json(path).get("metrics", {})
        found[(path.parents[2].name, path.parent.name)] = {
            key: None if metrics.get(key) is None else 100 * metrics[key] for key in METRICS}
    return found


def image_values(results: dict[tuple[str, str], dict[str, float | None]]) -> dict[str, float]:
    """The defined numbers flat, as summary.json lists them."""
    return {f"images/{model}/{dataset} {key}": round(value, 3)
            for (model, dataset), metrics in results.items() for key, value in metrics.items() if value is not None}


def render_image_table(results: dict[tuple[str, str], dict[str, float | None]]) -> str:
    """An HTML table: one row per (model, dataset); "undefined" where a category group has no ground truth."""
    head = "".join(f"<th>{key}</th>" for key in METRICS)
    rows = []
    for (model, dataset), metrics in results.items():
        cells = "".join(f'<td class="cell measured"><span class="ours">{format_number(value, key)}</span></td>'
                        if value is not None else '<td class="cell undefined"><span class="ours">undefined</span></td>'
                        for key, value in metrics.items())
        rows.append(f"<tr><td><code>{html.escape(model)}</code></td><td>{html.escape(dataset)}</td>{cells}</tr>")
    return (f'<table class="results"><caption>Image-level mask AP x 100 on held-out images (ours; the paper has '
            f'no such table)</caption><thead><tr><th>model</th><th>dataset</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
