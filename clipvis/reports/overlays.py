"""Tracks drawn over video frames: a colour per track (the same in every frame), its class name and score
in a label beside its mask; written as an mp4 video (PyAV, H.264), an animated GIF (PIL) and a contact sheet
(PNG grid of a few frames).

Frames are (H, W, 3) uint8 RGB numpy arrays; a track's masks are compressed COCO RLE, one per frame. Small
frames are enlarged (pixels repeated) before drawing, so that labels stay readable. Every file is written
atomically.
"""

from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pycocotools.mask as mask_api
from PIL import Image, ImageDraw, ImageFont

from clipvis.files import atomic_path
from clipvis.layout import OVERLAY_FILE

log = logging.getLogger(__name__)

MASK_ALPHA = 0.45
GOLDEN_RATIO = 0.618033988749895
MIN_DRAW_HEIGHT = 400  # frames lower than this are enlarged by a whole factor before drawing
LABEL_GAP = 4  # pixels between a mask's box and its label


@dataclass(frozen=True)
class Track:
    caption: str  # e.g. "cat 0.87"
    colour: tuple[int, int, int]
    segmentations: Sequence[dict]  # per frame: compressed RLE {"size": [H, W], "counts": str}


def track_colours(count: int) -> list[tuple[int, int, int]]:
    """Distinct, saturated colours: hues spaced by the golden ratio."""
    colours = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * GOLDEN_RATIO) % 1.0, 0.85, 0.95)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def tracks_from_results(records: Sequence[dict], class_names: dict[int, str], min_score: float) -> list[Track]:
    """Tracks of the result records scoring at least `min_score`, best first; class_names: category id -> name.

    A track slot selected with several labels gives records with the same masks: only the best is kept.
    """
    kept, seen = [], set()
    for record in sorted((r for r in records if r["score"] >= min_score), key=lambda r: -r["score"]):
        masks = tuple(m["counts"] if m else None for m in record["segmentations"])
        if masks not in seen:
            seen.add(masks)
            kept.append(record)
    return [Track(f"{class_names.get(r['category_id'], r['category_id'])} {r['score']:.2f}", colour,
                  r["segmentations"])
            for r, colour in zip(kept, track_colours(len(kept)))]


def draw_scale(height: int) -> int:
    """The whole factor by which a frame of this height is enlarged before drawing."""
    return max(1, -(-MIN_DRAW_HEIGHT // height))


def draw_tracks(frame: np.ndarray, tracks: Sequence[Track], index: int) -> np.ndarray:
    """Frame `index`, enlarged by `draw_scale`, with every track's mask tinted in its colour and outlined, and
    its caption in a label beside the mask (right of its box, else left, above or below; clear of the
    labels placed before it where there is room)."""
    scale = draw_scale(frame.shape[0])
    out = np.repeat(np.repeat(frame, scale, 0), scale, 1).astype(np.float32)
    boxes = []
    for track in tracks:
        mask = mask_api.decode(track.segmentations[index]).astype(bool)
        if not mask.any():
            continue
        mask = np.repeat(np.repeat(mask, scale, 0), scale, 1)
        colour = np.array(track.colour, dtype=np.float32)
        out[mask] = (1 - MASK_ALPHA) * out[mask] + MASK_ALPHA * colour
        out[_outline(mask)] = colour
        rows, cols = np.nonzero(mask)
        boxes.append((track, (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))))
    image = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = _font(image.height)
    placed: list[tuple[int, int, int, int]] = []
    for track, box in boxes:
        left, top, right, bottom = draw.textbbox((0, 0), track.caption, font=font)
        x, y = _label_position(box, (right - left + 2, bottom - top + 2), image.size, placed)
        placed.append((x, y, x + right - left + 2, y + bottom - top + 2))
        draw.rectangle(placed[-1], fill=track.colour, outline=(0, 0, 0))
        draw.text((x + 1 - left, y + 1 - top), track.caption, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def _label_position(box: tuple[int, int, int, int], size: tuple[int, int], frame: tuple[int, int],
                    placed: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    """Top left corner of a label of `size` (w, h) beside `box` (left, top, right, bottom) inside a frame of
    `frame` (W, H): the first of right, left, above and below that fits and overlaps no placed label, else
    the first that fits (or the right, pushed into the frame)."""
    (left, top, right, bottom), (w, h), (width, height) = box, size, frame
    candidates = [(right + LABEL_GAP, top), (left - LABEL_GAP - w, top), (left, top - LABEL_GAP - h),
                  (left, bottom + LABEL_GAP)]
    inside = [(x, min(max(y, 0), height - h)) for x, y in candidates if 0 <= x <= width - w and y <= height - h
              and y + h >= 0]
    free = [(x, y) for x, y in inside if not any(x < r and x + w > l and y < b and y + h > t
                                                 for l, t, r, b in placed)]
    x, y = (free or inside or [candidates[0]])[0]
    return min(max(x, 0), width - w), min(max(y, 0), height - h)


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """H.264 mp4 (yuv420p; an odd height or width is padded by one pixel). Returns the number of frames."""
    import av

    count = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.height, stream.width = frame.shape[:2]
                    stream.pix_fmt = "yuv420p"
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                count += 1
            if stream is not None:
                for packet in stream.encode(None):
                    container.mux(packet)
    return count


def write_gif(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> None:
    """Animated GIF, looping; `fps` is the playback rate of the given frames."""
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(20, round(1000 / fps)), loop=0)


def contact_sheet(frames: Sequence[np.ndarray], captions: Sequence[str], columns: int = 4) -> np.ndarray:
    """Frames (all one size) in a grid, each with its caption below it."""
    height, width = frames[0].shape[:2]
    font = _font(height)
    caption_height = font.size + 6
    rows = -(-len(frames) // columns)
    columns = min(columns, len(frames))
    sheet = Image.new("RGB", (columns * width, rows * (height + caption_height)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (frame, caption) in enumerate(zip(frames, captions)):
        x, y = (i % columns) * width, (i // columns) * (height + caption_height)
        sheet.paste(Image.fromarray(frame), (x, y))
        draw.text((x + 3, y + height + 2), caption, fill=(0, 0, 0), font=font)
    return np.asarray(sheet)


def write_png(path: str | Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def thumbnail(frame: np.ndarray, max_width: int) -> np.ndarray:
    """The frame scaled down (bilinear, aspect kept) to at most `max_width` pixels wide."""
    height, width = frame.shape[:2]
    if width <= max_width:
        return frame
    size = (max_width, max(1, round(height * max_width / width)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (or on the frame border)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _font(frame_height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, frame_height // 30))


GIF_MAX_FRAMES = 60  # the GIF shows every n-th frame so that at most this many remain
GIF_MAX_WIDTH = 640
SHEET_FRAMES = 8
SHEET_MAX_WIDTH = 480


def write_video_overlays(source, records: list[dict], class_names: list[str], min_score: float,
                         out_dir: Path) -> None:
    """overlay.mp4, overlay.gif and contact_sheet.png in `out_dir`: the tracks of `records` (a video's results
    on `source`, a FrameSource read again here) scoring at least `min_score`."""
    tracks = tracks_from_results(records, dict(enumerate(class_names, start=1)), min_score)
    log.info("%d of %d tracks score at least %.2f", len(tracks), len(records), min_score)
    frame_count = len(records[0]["segmentations"])
    gif_step = -(-frame_count // GIF_MAX_FRAMES)
    sheet_indices = sorted({round(i * (frame_count - 1) / max(SHEET_FRAMES - 1, 1))
                            for i in range(SHEET_FRAMES)})
    gif_frames, sheet_frames = [], []

    def drawn_frames():
        for index, frame in enumerate(source):
            drawn = draw_tracks(frame.permute(1, 2, 0).numpy(), tracks, index)
            if index % gif_step == 0:
                gif_frames.append(thumbnail(drawn, GIF_MAX_WIDTH))
            if index in sheet_indices:
                sheet_frames.append(thumbnail(drawn, SHEET_MAX_WIDTH))
            yield drawn

    write_mp4(out_dir / "overlay.mp4", drawn_frames(), source.fps)
    write_gif(out_dir / OVERLAY_FILE, gif_frames, source.fps / gif_step)
    write_png(out_dir / "contact_sheet.png",
                       contact_sheet(sheet_frames, [f"frame {i}" for i in sheet_indices]))
