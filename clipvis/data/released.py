"""The authors' released CLIP-VIS checkpoints: which params row each is, and where its file goes.

They are published on Google Drive (links on the authors' project page), which cannot be fetched by a
script: download them by hand and put each under the data root with the name below. The authors'
evaluation command names the first one `clipvis_lvis_r50_7.pth` (LVIS, R50, DEC_LAYERS 7); the others
get names of the same pattern here. `clipvis import-checkpoint` turns a file into a clipvis checkpoint;
the pipeline does that itself with `--config weights=released`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUTHORS_PAGE = "the Download column of the README at github.com/zwq456/CLIP-VIS"
WEIGHTS_DIR = "weights"  # under the data root


@dataclass(frozen=True)
class ReleasedWeights:
    model: str  # the params row, params/paper/<model>.yaml
    file_name: str
    drive_id: str  # the Google Drive file id of the authors' link
    description: str

    def path(self, root: str | Path) -> Path:
        return Path(root) / WEIGHTS_DIR / self.file_name

    @property
    def url(self) -> str:
        return f"https://drive.google.com/file/d/{self.drive_id}/view"


RELEASED = (
    ReleasedWeights("r50_lvis", "clipvis_lvis_r50_7.pth", "1taVBPVTX-MVQkp5nc0QgreiaJqFhYgtJ", "LVIS, ResNet-50"),
    ReleasedWeights("convnext_lvis", "clipvis_lvis_convnext_b_7.pth", "1R7qGowGbY9Al7ygU2fZ-Y5uG5xfgmDyT",
                    "LVIS, ConvNeXt-B"),
    ReleasedWeights("r50_coco_ytvis19", "clipvis_coco_ytvis19_r50_10.pth", "14Oed2SbCVZcAtV1yaZIzuc7adGXuHiyZ",
                    "COCO + YTVIS19, ResNet-50"),
    ReleasedWeights("convnext_coco_ytvis19", "clipvis_coco_ytvis19_convnext_b_10.pth",
                    "1fxujJmjMLAkXubzYSqiv2cVgDYIIp64f", "COCO + YTVIS19, ConvNeXt-B"),
)
RELEASED_BY_MODEL = {weights.model: weights for weights in RELEASED}
