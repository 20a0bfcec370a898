"""The toy CLIP's zero-shot accuracy (the JSON `clipvis pretrain-clip` writes beside its checkpoint), for the report.

Read from runs/{scale}/clip/*.json; ours only (the paper uses released CLIP weights). Shown in index.html
and listed flat in summary.json ("clip/{name} zero-shot {object masks|whole images} {group}", top-1 x 100).
"""

from __future__ import annotations

import html
from pathlib import Path

from clipvis import layout
from clipvis.files import read_json
from clipvis.reports.paper_numbers import Scale

VIEWS = {"zero_shot_top1": "object masks", "zero_shot_top1_whole_image": "whole images"}
GROUPS = ("overall", "base", "novel")
NO_GROUP = '<td class="cell undefined"><span class="ours">none</span></td>'  # no held-out image of the group


def clip_reports(scale: Scale, runs_dir: str | Path) -> dict[str, dict]:
    """{checkpoint name: its pretraining report} for every pretrained CLIP of this scale, sorted."""
    found = {}
    for path in layout.find(layout.clip_dir(runs_dir, scale) / "*.json"):
        report = read_json(path)
        if "zero_shot_top1" in report:
            found[path.stem] = report
    return found


def clip_values(reports: dict[str, dict]) -> dict[str, float]:
    """Zero-shot top-1 x 100 flat, as summary.json lists it."""
    return {f"clip/{name} zero-shot {view} {group}": round(100 * report[key][group], 3)
            for name, report in reports.items() for key, view in VIEWS.items()
            for group in GROUPS if group in report.get(key, {})}


def render_clip_table(reports: dict[str, dict]) -> str:
    """An HTML table: one row per CLIP and view (object masks, whole images), top-1 overall / base / novel."""
    head = "".join(f"<th>{group}</th>" for group in GROUPS)
    rows = []
    for name, report in reports.items():
        for key, view in VIEWS.items():
            if key not in report:
                continue
            cells = "".join(f'<td class="cell measured"><span class="ours">{100 * report[key][group]:.1f}</span></td>'
                            if group in report[key] else NO_GROUP for group in GROUPS)
            rows.append(f"<tr><td><code>{html.escape(name)}</code> ({html.escape(str(report.get('model')))})</td>"
                        f"<td>{view}</td>{cells}<td>{report.get('train_seconds')}</td></tr>")
    return (f'<table class="results"><caption>Zero-shot top-1 (%) of the pretrained toy CLIP over the whole '
            f'vocabulary on the held-out images, pooling the object\'s mask and pooling the whole image (ours)</caption>'
            f'<thead><tr><th>CLIP</th><th>view</th>{head}<th>training s</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
