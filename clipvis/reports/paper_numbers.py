"""The paper's Tables I–VI as data: every printed number, and which of our runs measures each cell.

A cell of our tables is (row, column). The row names a model (a params file stem, per scale) and a
test-time variant (params/variants.yaml); the column names a benchmark (per scale) and a metric.
Rows without a model at a scale are other methods (or our rows that have no toy counterpart): only
the paper's number is shown. Columns without a toy benchmark are "n/a at toy scale".

Numbers are as printed (percent; GFLOPs; frames per second); None where the paper prints "-".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Scale = Literal["toy", "paper"]

# The toy benchmarks that stand for real ones (the toy world has no test split, BURST or YTVIS).
TOY_STAND_INS = {"lvvis_val": "toy_lvvis", "ovis_val": "toy_ovis"}


@dataclass(frozen=True)
class Column:
    """One numeric column: a metric of a benchmark (source "score"), of the model (source "complexity"), or
    of the temporal matching on a benchmark (source "matching": infer's matching.json; the paper has none)."""

    group: str  # header spanning the columns of one dataset, e.g. "LV-VIS val"; "" for none
    metric: str  # key in metrics.json["metrics"] or in complexity.json
    header: str = ""  # shown instead of the metric key when set
    benchmark: str | None = None  # the paper-scale benchmark (score columns)
    source: Literal["score", "complexity", "matching"] = "score"

    @property
    def title(self) -> str:
        return self.header or self.metric

    def benchmark_at(self, scale: Scale) -> str | None:
        """The benchmark measuring this column at `scale`; None where there is none (n/a)."""
        return self.benchmark if scale == "paper" else TOY_STAND_INS.get(self.benchmark)


@dataclass(frozen=True)
class Row:
    labels: tuple[str, ...]  # the row's label cells, one per PaperTable.label_headers
    paper: tuple[float | None, ...]  # one per column
    models: dict[str, str] = field(default_factory=dict)  # scale -> params stem (runs/{scale}/{model}/...)
    variant: str = "default"


@dataclass(frozen=True)
class RowGroup:
    title: str  # "" for an untitled group
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class PaperTable:
    key: str  # file stem: table1, table2, ...
    title: str
    label_headers: tuple[str, ...]
    columns: tuple[Column, ...]
    groups: tuple[RowGroup, ...]
    notes: tuple[str, ...] = ()


def tk_variant(memory: int, topk: int) -> str:
    """The params/variants.yaml name of top-K matching with memory T and K selected frames."""
    return f"T{memory}_K{topk}"


# ----------------------------------------------------------------------------------- columns

_ABLATION_COLUMNS = (
    Column("LV-VIS", "AP", benchmark="lvvis_val"),
    Column("LV-VIS", "APn", benchmark="lvvis_val"),
    Column("OVIS", "AP", benchmark="ovis_val"),
    Column("BURST", "AP", benchmark="burst_val"),
    Column("BURST", "APu", benchmark="burst_val"),
)
# How often matching moved another query into a slot showing an object: says whether the strategies
# could differ at all on a benchmark (on the toy world they rarely do).
_SWITCH_COLUMN = Column("LV-VIS", "switch_rate", header="slot switches %", benchmark="lvvis_val", source="matching")
_TABLE1_COLUMNS = (
    Column("LV-VIS val", "AP", benchmark="lvvis_val"),
    Column("LV-VIS val", "APn", benchmark="lvvis_val"),
    Column("LV-VIS test", "AP", benchmark="lvvis_test"),
    Column("LV-VIS test", "APn", benchmark="lvvis_test"),
    Column("OVIS", "AP", benchmark="ovis_val"),
    Column("YTVIS2019", "AP", benchmark="ytvis19_val"),
    Column("YTVIS2019", "APn", benchmark="ytvis19_val"),
    Column("YTVIS2021", "AP", benchmark="ytvis21_val"),
    Column("YTVIS2021", "APn", benchmark="ytvis21_val"),
    Column("BURST", "AP", benchmark="burst_val"),
    Column("BURST", "APu", benchmark="burst_val"),
)

# Our main models: the paper's rows and the toy model that stands for the R50/LVIS row.
R50_LVIS = {"paper": "r50_lvis", "toy": "default"}
CONVNEXT_LVIS = {"paper": "convnext_lvis"}

_ = None  # the paper's "-"

# ----------------------------------------------------------------------------------- Table I

TABLE1 = PaperTable(
    key="table1",
    title="Table I: comparison with other methods (AP, APn; BURST: AP, APu)",
    label_headers=("Method", "Training data", "Backbone"),
    columns=_TABLE1_COLUMNS,
    groups=(
        RowGroup("Classical video instance segmentation", (
            Row(("MaskTrack R-CNN", "/", "R50"), (_, _, _, _, 10.8, 30.3, _, 28.6, _, _, _)),
            Row(("SipMask", "/", "R50"), (_, _, _, _, 10.2, 33.7, _, 31.7, _, _, _)),
            Row(("Mask2Former", "/", "R50"), (_, _, _, _, 17.3, 46.4, _, 40.6, _, _, _)),
            Row(("MinVIS", "/", "R50"), (_, _, _, _, 25.0, 47.4, _, 44.2, _, _, _)),
            Row(("IDOL", "/", "R50"), (_, _, _, _, 30.2, 49.5, _, 43.9, _, _, _)),
        )),
        RowGroup("Open-vocabulary video instance segmentation", (
            Row(("DetPro-SORT", "LVIS", "R50"), (6.4, 3.5, 5.8, 2.1, _, _, _, _, _, _, _)),
            Row(("Detic-SORT", "LVIS", "R50"), (6.5, 3.4, 5.7, 2.1, 6.7, 14.6, 3.5, 12.7, 3.1, 1.9, 2.5)),
            Row(("DetPro-OWTB", "LVIS", "R50"), (7.9, 4.2, 7.0, 2.9, _, _, _, _, _, _, _)),
            Row(("Detic-OWTB", "LVIS", "R50"), (7.7, 4.2, 7.0, 2.8, 9.0, 17.9, 4.5, 16.7, 5.8, 2.7, 1.8)),
            Row(("Detic-XMem", "LVIS", "R50"), (8.8, 5.4, 7.7, 3.6, _, _, _, _, _, _, _)),
            Row(("OV2Seg", "LVIS", "R50"), (14.2, 11.9, 11.4, 8.9, 11.2, 27.2, 11.1, 23.6, 7.3, 3.7, 2.4)),
            Row(("OVFormer", "LVIS", "R50+ViT-B"), (_, _, _, _, 15.1, 34.8, 16.5, 29.8, 15.7, _, _)),
            Row(("CLIP-VIS (ours)", "LVIS", "R50"), (19.5, 24.2, 14.6, 15.9, 14.1, 32.2, 23.8, 30.1, 17.9, 5.2, 7.7),
                models=R50_LVIS),
            Row(("Detic-SORT", "LVIS", "SwinB"), (12.8, 6.6, 9.4, 4.7, 11.7, 23.8, 7.9, 21.6, 9.8, 2.5, 1.0)),
            Row(("Detic-OWTB", "LVIS", "SwinB"), (14.5, 8.5, 11.8, 6.1, 13.6, 30.0, 9.7, 27.1, 11.4, 3.9, 2.4)),
            Row(("Detic-XMem", "LVIS", "SwinB"), (16.3, 10.6, 13.1, 7.7, _, _, _, _, _, _, _)),
            Row(("OV2Seg", "LVIS", "SwinB"), (21.1, 16.3, 16.4, 11.5, 17.5, 37.6, 21.3, 33.9, 18.2, 4.9, 3.0)),
            Row(("OVFormer", "LVIS", "SwinB+ViT-B"), (_, _, _, _, 21.3, 44.3, 21.5, 37.6, 18.3, _, _)),
            Row(("CLIP-VIS (ours)", "LVIS", "ConvNeXt-B"),
                (32.2, 40.2, 25.3, 30.6, 18.5, 42.1, 27.5, 37.9, 22.0, 8.3, 12.7), models=CONVNEXT_LVIS),
            Row(("OpenVIS", "COCO, YT19", "R50+R50"), (_, _, _, _, _, _, _, _, _, 2.6, _)),
            Row(("OpenVIS", "COCO, YT19", "R50+ViT-B"), (_, _, _, _, _, 36.1, _, _, _, 3.5, _)),
            Row(("CLIP-VIS (ours)", "COCO, YT19", "R50"), (9.4, 13.7, 6.7, 8.4, 15.8, 39.7, _, 35.7, _, 4.2, 3.7),
                models={"paper": "r50_coco_ytvis19"}),
            Row(("CLIP-VIS (authors' README)", "COCO, YT19", "ConvNeXt-B"),
                (15.9, _, 12.0, _, 18.6, 50.0, _, 44.2, _, 5.0, _), models={"paper": "convnext_coco_ytvis19"}),
        )),
    ),
    notes=(
        "The OpenVIS rows' BURST APu did not survive the paper's text extraction (the text says CLIP-VIS R50 "
        "is 1.6 AP and 1.4 APu above OpenVIS); the CLIP-VIS COCO, YT19 R50 BURST APu is printed as 3.7*.",
        "The last row is not in the paper: its numbers are the authors' README (AP only).",
        "Toy scale: the toy default model (params/toy/default.yaml) stands for CLIP-VIS R50 trained on LVIS.",
    ),
)

# ----------------------------------------------------------------------------------- Tables II–V

_OURS_ROW = (19.5, 24.2, 14.1, 5.2, 7.7)  # CLIP-VIS R50 (LVIS) with every module, as in Tables II–V
_NOT_REPORTED = (None,) * 5  # a row of ours that the paper's table does not have

TABLE2 = PaperTable(
    key="table2",
    title="Table II: weighted open-vocabulary classification (WOC) and temporal top-K matching (TKM), R50",
    label_headers=("WOC", "TKM"),
    columns=_ABLATION_COLUMNS,
    groups=(RowGroup("", (
        Row(("×", "×"), (9.2, 11.0, 6.1, 3.1, 2.8), R50_LVIS, "no_woc_no_tkm"),
        Row(("✓", "×"), (18.2, 22.2, 10.7, 4.1, 5.4), R50_LVIS, "woc_no_tkm"),
        Row(("✓", "✓"), _OURS_ROW, R50_LVIS, "default"),
    )),),
)

TABLE3 = PaperTable(
    key="table3",
    title="Table III: object scores and mask-IoU scores in the weighted classification, R50",
    label_headers=("object score", "IoU score"),
    columns=_ABLATION_COLUMNS,
    groups=(RowGroup("", (
        Row(("×", "×"), (8.9, 10.6, 7.1, 4.7, 5.2), R50_LVIS, "no_object_no_iou"),
        Row(("×", "✓"), (10.3, 12.5, 8.2, 5.1, 6.0), R50_LVIS, "iou_only"),
        Row(("✓", "×"), (18.7, 23.0, 13.8, 5.1, 7.6), R50_LVIS, "object_only"),
        Row(("✓", "✓"), _OURS_ROW, R50_LVIS, "default"),
    )),),
)

TABLE4 = PaperTable(
    key="table4",
    title="Table IV: the mask-IoU head's input features and activation (models retrained; at toy scale the head "
          "alone, on the method's frozen model), R50",
    label_headers=("Setting",),
    columns=_ABLATION_COLUMNS,
    groups=(
        RowGroup("(a) input features", (
            Row(("mask-pooled pixel-decoder features",), (19.2, 19.3, 13.6, 5.3, 7.2),
                {"paper": "r50_lvis_iou_pooled", "toy": "iou_pooled"}),
            Row(("query embeddings",), _OURS_ROW, R50_LVIS),
        )),
        RowGroup("(b) activation", (
            Row(("ReLU",), (18.8, 22.8, 12.3, 5.1, 7.4), {"paper": "r50_lvis_iou_relu", "toy": "iou_relu"}),
            Row(("Sigmoid",), _OURS_ROW, R50_LVIS),
        )),
        # Ours: the same models with the mask-IoU score alone weighting the classification (no object score),
        # where the head's ranking is not hidden behind the object score
        RowGroup("(c) ranked by the mask-IoU score alone (iou_only; not in the paper)", (
            Row(("mask-pooled features, sigmoid",), _NOT_REPORTED, {"paper": "r50_lvis_iou_pooled", "toy": "iou_pooled"},
                "iou_only"),
            Row(("query embeddings, ReLU",), _NOT_REPORTED, {"paper": "r50_lvis_iou_relu", "toy": "iou_relu"},
                "iou_only"),
            Row(("query embeddings, sigmoid",), _NOT_REPORTED, R50_LVIS, "iou_only"),
        )),
    ),
)

# Table V, bottom: (T, K) -> LV-VIS AP, APn, OVIS AP, BURST AP, APu.
TK_PAPER: dict[tuple[int, int], tuple[float, ...]] = {
    (3, 1): (18.4, 23.0, 10.9, 4.5, 6.0),
    (5, 1): (18.6, 23.3, 10.9, 4.6, 6.1),
    (5, 3): (19.3, 24.2, 13.7, 4.9, 7.3),
    (7, 1): (18.6, 23.3, 11.1, 4.6, 5.7),
    (7, 3): (19.5, 24.2, 13.7, 5.1, 7.1),
    (7, 5): (19.1, 23.7, 12.4, 5.4, 7.4),
    (9, 1): (18.7, 23.4, 10.7, 4.7, 5.7),
    (9, 3): _OURS_ROW,
    (9, 5): (19.3, 23.9, 13.2, 5.4, 7.6),
    (9, 7): (19.2, 23.7, 12.4, 5.4, 7.3),
    (11, 3): (19.5, 24.2, 13.1, 5.2, 6.9),
    (11, 5): (19.4, 24.0, 13.0, 5.5, 7.7),
    (11, 7): (19.3, 23.8, 12.0, 5.4, 6.5),
}

TABLE5 = PaperTable(
    key="table5",
    title="Table V: matching strategies, and the memory T and selected frames K of top-K matching, R50",
    label_headers=("Strategy", "T", "K"),
    columns=(*_ABLATION_COLUMNS, _SWITCH_COLUMN),
    groups=(
        RowGroup("Strategies", (
            Row(("Adjacent", "", ""), (18.2, 22.2, 10.7, 4.1, 5.4, None), R50_LVIS, "adjacent"),
            Row(("Long-term", "", ""), (18.7, 23.0, 12.1, 4.7, 6.3, None), R50_LVIS, "longterm"),
        )),
        RowGroup("Top-K", tuple(
            Row(("Top-K", str(t), str(k)), (*numbers, None), R50_LVIS, tk_variant(t, k))
            for (t, k), numbers in TK_PAPER.items())),
    ),
    notes=("Slot switches % (ours only): of the track slots showing an object (object probability >= 0.5) in "
           "the frames after a video's first, the share that took another query than in the previous frame. "
           "Where it is near zero, every strategy keeps the same tracks and their APs coincide.",),
)

# ----------------------------------------------------------------------------------- Table VI

TABLE6 = PaperTable(
    key="table6",
    title="Table VI: accuracy and cost on LV-VIS val (FLOPs per frame, frames per second)",
    label_headers=("Method", "Backbone"),
    columns=(
        Column("LV-VIS val", "AP", benchmark="lvvis_val"),
        Column("", "gflops_per_frame", header="FLOPs", source="complexity"),
        Column("", "fps", header="FPS", source="complexity"),
    ),
    groups=(RowGroup("", (
        Row(("Detic-SORT", "R50"), (6.5, _, 6.0)),
        Row(("Detic-OWTB", "R50"), (7.7, _, 5.9)),
        Row(("Detic-XMem", "R50"), (8.8, _, 16.4)),
        Row(("OV2Seg", "R50"), (14.2, _, 20.1)),
        Row(("OV2Seg*", "R50"), (14.2, 238.2, 26.1)),
        Row(("CLIP-VIS (ours)", "R50"), (19.5, 244.1, 31.4), R50_LVIS),
        Row(("Detic-SORT", "SwinB"), (12.8, _, 6.7)),
        Row(("Detic-OWTB", "SwinB"), (14.5, _, 6.8)),
        Row(("Detic-XMem", "SwinB"), (16.3, _, 13.4)),
        Row(("OV2Seg", "SwinB"), (21.1, _, 16.8)),
        Row(("OV2Seg*", "SwinB"), (21.1, 448.2, 17.2)),
        Row(("CLIP-VIS (ours)", "ConvNeXt-B"), (32.2, 409.3, 21.0), CONVNEXT_LVIS),
    )),),
    notes=("The paper measures speed on one NVIDIA A100 GPU.",),
)

TABLES: tuple[PaperTable, ...] = (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6)
