"""The controlled matching test (`clipvis matching-test`) for the report: beside Table V, a table the paper lacks.

Read from runs/{scale}/{model}/matching_test/{benchmark}/matching_test.json. One row per matching strategy
(a test-time variant), two columns per noise level: identity recovery (% of frames whose track slots keep
every object where it was first seen) and video AP x 100. Rendered as HTML (index.html) and Markdown
(tables/matching_test.md), and listed flat in summary.json
("matching_test/{model}/{benchmark}/{variant} noise {level} {identity %|AP}"). Under the table, one sentence
says how often the network's confident queries hand an object to another query between adjacent frames and
whether the embeddings follow it (the report's `handovers`, when it has them), listed in summary.json as
"matching_test/{model}/{benchmark}/handovers {handover %|followed %}".
"""

from __future__ import annotations

import html
from pathlib import Path

from clipvis import layout
from clipvis.files import read_json
from clipvis.reports.paper_numbers import Scale

CAPTION = ("Temporal matching under control (ours; the paper has no such table): on {benchmark}, every frame's "
           "queries reach the matcher in a random order with Gaussian noise on their embeddings (noise: its norm "
           "over the embedding's). Identity: % of frames whose track slots keep every ground-truth object where it "
           "was first seen; AP: video AP x 100. The first row is the network's own query order, unshuffled and "
           "unmatched.")


def matching_tests(scale: Scale, runs_dir: str | Path) -> dict[tuple[str, str], dict]:
    """{(model, benchmark): the matching_test.json report} for every matching test of this scale, sorted."""
    return {(path.parents[2].name, path.parent.name): read_json(path)
            for path in layout.find(layout.matching_test_dir(runs_dir, scale, "*", "*") / layout.MATCHING_TEST_FILE)}


def matching_values(tests: dict[tuple[str, str], dict]) -> dict[str, float]:
    """Identity recovery (%) and AP x 100 flat, as summary.json lists them."""
    values = {}
    for (model, benchmark), report in tests.items():
        for row in report["rows"]:
            key = f"matching_test/{model}/{benchmark}/{row['variant']} noise {row['noise']:g}"
            for name, number in (("identity %", row["identity_recovery"]), ("AP", row["AP"])):
                if number is not None:
                    values[f"{key} {name}"] = round(100 * number, 3)
        handovers = report.get("handovers", {})
        for name, field in (("handover %", "handover_rate"), ("followed %", "followed_rate")):
            if handovers.get(field) is not None:
                values[f"matching_test/{model}/{benchmark}/handovers {name}"] = round(100 * handovers[field], 3)
    return values


def handover_sentence(report: dict) -> str:
    """What matching has to work with, in words ("" when the report has no handovers or no pairs); reports with
    handovers also give the object probability of a confident query (`object_shown`)."""
    found = report.get("handovers")
    if not found or not found["pairs"]:
        return ""
    sentence = (f"In the network's own query order, {found['handovers']} of {found['pairs']} adjacent-frame pairs "
                f"of an object held by a confident query (object probability >= {report['object_shown']:g}) were "
                f"handovers to another query ({100 * found['handover_rate']:.1f} %); a kept object's query embedding has cosine "
                f"{found['cosine_kept']:.2f} with itself in the next frame.")
    if found["handovers"]:
        sentence += (f" At a handover the old owner's embedding has cosine {found['cosine_handover_new_owner']:.2f} "
                     f"with the new owner's and {found['cosine_handover_old_query']:.2f} with its own in the next "
                     f"frame: the new owner is its most similar query in {100 * found['followed_rate']:.0f} % of "
                     "handovers, so matching can move a slot only that often.")
    if found.get("owned_pairs"):  # reports from before owners of any confidence were counted have none
        sentence += (f" Counting owners of any confidence, an object's owner changed in {found['owner_changes']} of "
                     f"{found['owned_pairs']} adjacent-frame pairs ({100 * found['owner_change_rate']:.1f} %).")
    return sentence


def table_grid(report: dict) -> tuple[list[float], list[tuple[str, dict[float, dict]]]]:
    """The noise levels, and per variant (in report order) its row of each noise level."""
    variants: dict[str, dict[float, dict]] = {}
    for row in report["rows"]:
        variants.setdefault(row["variant"], {})[row["noise"]] = row
    return report["noise_levels"], list(variants.items())


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{100 * value:.1f}"


def render_matching_html(model: str, benchmark: str, report: dict) -> str:
    levels, variants = table_grid(report)
    top = "".join(f'<th colspan="2">noise {level:g}</th>' for level in levels)
    sub = "<th>identity %</th><th>AP</th>" * len(levels)
    rows = []
    for variant, by_level in variants:
        cells = "".join(f'<td class="cell measured"><span class="ours">{_number(by_level[level][key])}</span></td>'
                        if level in by_level else '<td class="cell na"></td>'
                        for level in levels for key in ("identity_recovery", "AP"))
        rows.append(f"<tr><td><code>{html.escape(variant)}</code></td>{cells}</tr>")
    caption = html.escape(CAPTION.format(benchmark=benchmark) + f" Model: {model}.")
    handovers = handover_sentence(report)
    return (f'<table class="results" id="matching_test"><caption>{caption}</caption><thead><tr><th></th>{top}</tr>'
            f'<tr><th>matching</th>{sub}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            + (f"<p>{html.escape(handovers)}</p>" if handovers else ""))


def render_matching_markdown(model: str, benchmark: str, report: dict) -> str:
    levels, variants = table_grid(report)
    headers = ["matching"] + [f"noise {level:g} {key}" for level in levels for key in ("identity %", "AP")]
    lines = [f"### Matching test ({model} on {benchmark})", "", "| " + " | ".join(headers) + " |",
             "|---|" + "---:|" * (len(headers) - 1)]
    for variant, by_level in variants:
        cells = [_number(by_level[level][key]) if level in by_level else ""
                 for level in levels for key in ("identity_recovery", "AP")]
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    handovers = handover_sentence(report)
    return "\n".join(lines + ["", CAPTION.format(benchmark=benchmark), *(["", handovers] if handovers else []), ""])
