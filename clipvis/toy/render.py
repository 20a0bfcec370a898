"""Draws a toy-world scene: textured background, shapes in z-order, lighting and sensor noise.

Besides the image, every frame gives each object's full silhouette and its visible part (the
silhouette minus what objects in front of it cover); the visible part is the ground-truth mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from clipvis.toy.world import Background, Scene

RING_INNER = 0.55  # inner / outer radius of a ring
STAR_INNER = 0.45  # inner / outer radius of a star
CROSS_HALF_WIDTH = 0.3  # half the width of a cross's arm, in circumradii
PAN_PADDING = 0.25  # how far the camera pans, as a fraction of the frame height
NOISE_STD = 3.0  # per-pixel sensor noise, in grey levels


def _regular(n: int, start: float, radii: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """(n * len(radii), 2) vertices of a regular polygon (or star when radii alternate) of circumradius 1."""
    k = np.arange(n * len(radii))
    angles = start + 2 * math.pi * k / len(k)
    r = np.array(radii)[k % len(radii)]
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)


def _cross() -> np.ndarray:
    w, a = CROSS_HALF_WIDTH, math.sqrt(1 - CROSS_HALF_WIDTH**2)  # the arm tips' corners touch the unit circle
    return np.array([(w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a),
                     (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w), (-w, -a)])


# Outlines of the polygonal shapes, circumradius 1, centred at the origin (y points down).
OUTLINES: dict[str, np.ndarray] = {
    "square": _regular(4, math.pi / 4),
    "triangle": _regular(3, -math.pi / 2),
    "star": _regular(5, -math.pi / 2, (1.0, STAR_INNER)),
    "hexagon": _regular(6, 0.0),
    "cross": _cross(),
}


def shape_mask(shape: str, centre: np.ndarray, radius: float, angle: float, height: int, width: int) -> np.ndarray:
    """(H, W) bool silhouette of a shape; parts outside the frame are cut off."""
    # PIL truncates negative coordinates towards zero, which would leak a shape just left of or above
    # the frame into its first column or row; drawing on a margin keeps both sides alike.
    margin = math.ceil(radius) + 2
    canvas = Image.new("L", (width + 2 * margin, height + 2 * margin))
    draw = ImageDraw.Draw(canvas)
    x, y = float(centre[0]) + margin, float(centre[1]) + margin
    if shape in ("circle", "ring"):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
        if shape == "ring":
            inner = RING_INNER * radius
            draw.ellipse((x - inner, y - inner, x + inner, y + inner), fill=0)
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        points = OUTLINES[shape] @ np.array([[cos, sin], [-sin, cos]]) * radius + (x, y)
        draw.polygon([tuple(p) for p in points.tolist()], fill=255)
    return np.asarray(canvas)[margin:margin + height, margin:margin + width] > 0


def visible_parts(full: np.ndarray) -> np.ndarray:
    """(N, H, W) silhouettes listed back to front -> the part of each that no later one covers."""
    visible = full.copy()
    covered = np.zeros(full.shape[1:], dtype=bool)
    for i in reversed(range(len(full))):
        visible[i] &= ~covered
        covered |= full[i]
    return visible


def background_texture(background: Background, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 texture blending the background's two colours."""
    rng = np.random.default_rng(background.seed)
    yy, xx = np.ogrid[0:height, 0:width]
    angle = rng.uniform(0, math.pi)
    along = (xx * math.cos(angle) + yy * math.sin(angle)).astype(np.float32)  # (H, W)
    if background.kind == "noise":
        cells = int(rng.integers(3, 9))
        grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32))  # mode "F"
        blend = np.asarray(grid.resize((width, height), Image.BICUBIC)).clip(0, 1)
    elif background.kind == "stripes":
        wave = np.sin(2 * math.pi * along / (rng.uniform(0.08, 0.3) * height))
        blend = (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
    else:  # gradient
        blend = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    first, second = background.colours.astype(np.float32)
    texture = first + (second - first) * blend[..., None]
    texture += 6 * rng.standard_normal(texture.shape, dtype=np.float32)  # static grain, moves with the pan
    return texture


@dataclass
class RenderedFrame:
    image: np.ndarray  # (H, W, 3) uint8
    visible: np.ndarray  # (N, H, W) bool: what the camera sees of each object (the ground-truth mask)
    full: np.ndarray  # (N, H, W) bool: each object's whole silhouette within the frame


def render_scene(scene: Scene) -> Iterator[RenderedFrame]:
    """The scene's frames in order."""
    height, width = scene.height, scene.width
    pad = round(PAN_PADDING * height) if scene.num_frames > 1 else 0  # room for the camera to pan
    texture = background_texture(scene.background, height + 2 * pad, width + 2 * pad)
    noise = np.random.default_rng(scene.noise_seed)
    for t in range(scene.num_frames):
        dx, dy = np.rint(scene.background.pan[t] * 2 * pad).astype(int)
        image = texture[dy:dy + height, dx:dx + width].copy()
        full = np.zeros((len(scene.objects), height, width), dtype=bool)
        for i, obj in enumerate(scene.objects):
            full[i] = shape_mask(obj.shape, obj.centres[t], obj.radius, obj.angles[t], height, width)
        visible = visible_parts(full)
        for obj, mask in zip(scene.objects, visible):
            image[mask] = obj.rgb
        image *= scene.gains[t].astype(np.float32)
        image += NOISE_STD * noise.standard_normal(image.shape, dtype=np.float32)
        yield RenderedFrame(image=np.rint(image).clip(0, 255).astype(np.uint8), visible=visible, full=full)
