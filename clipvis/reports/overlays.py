"""Tracks drawn over video frames: a colour per track, its class name and score; written as an mp4
video (PyAV, H.264), an animated GIF (PIL) and a contact sheet (PNG grid of a few frames).

Frames are (H, W, 3) uint8 RGB numpy arrays; a track's masks are compressed COCO RLE, one per frame.
Every file is written atomically.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pycocotools.mask as mask_api
from PIL import Image, ImageDraw, ImageFont

from clipvis.io import atomic_path

MASK_ALPHA = 0.45
GOLDEN_RATIO = 0.618033988749895


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
    """Tracks of the result records scoring at least `min_score`, best first; class_names: category id -> name."""
    kept = sorted((r for r in records if r["score"] >= min_score), key=lambda r: -r["score"])
    return [Track(f"{class_names.get(r['category_id'], r['category_id'])} {r['score']:.2f}", colour,
                  r["segmentations"])
            for r, colour in zip(kept, track_colours(len(kept)))]


def draw_tracks(frame: np.ndarray, tracks: Sequence[Track], index: int) -> np.ndarray:
    """Frame `index` with every track's mask tinted in its colour, outlined, and captioned at its top left."""
    out = frame.astype(np.float32)
    captions = []
    for track in tracks:
        mask = mask_api.decode(track.segmentations[index]).astype(bool)
        if not mask.any():
            continue
        colour = np.array(track.colour, dtype=np.float32)
        out[mask] = (1 - MASK_ALPHA) * out[mask] + MASK_ALPHA * colour
        out[_outline(mask)] = colour
        rows, cols = np.nonzero(mask)
        captions.append((track, int(cols.min()), int(rows.min())))
    image = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = _font(frame.shape[0])
    for track, x, y in captions:
        left, top, right, bottom = draw.textbbox((x, y), track.caption, font=font)
        shift = min(top - y, 0) + max(bottom - frame.shape[0], 0)  # keep the caption inside the frame
        draw.rectangle((left - 1, top - 1 - shift, right + 1, bottom + 1 - shift), fill=track.colour)
        draw.text((x, y - shift), track.caption, fill=(0, 0, 0), font=font)
    return np.asarray(image)


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
