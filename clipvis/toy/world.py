"""The toy world's ground truth: colour-shape categories with a base/novel split, and scenes of moving objects.

A scene says where every object is in every frame (smooth motion bouncing off walls, some objects
leaving the frame and coming back, look-alike pairs crossing paths), which object is in front
(z-order), and what the background and lighting are. It holds no pixels: `toy_render` draws it.
Everything comes from the numpy Generator passed in, so a scene is a pure function of its seed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clipvis.errors import InputError

CONFIG_SOURCE = "toy world config"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (235, 210, 35),
    "purple": (135, 45, 175),
    "orange": (245, 135, 25),
    "cyan": (35, 200, 210),
    "pink": (240, 120, 180),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
    "brown": (125, 75, 35),
    "grey": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "ring", "hexagon", "cross")
BACKGROUND_KINDS = ("noise", "stripes", "gradient")

# Roles of objects in a scene.
FREE, EXIT, LOOKALIKE = "free", "exit", "lookalike"
# Objects that leave and come back are smaller and fast (fractions of the frame height), so that in a
# 12-frame video they can go out of view and return.
EXIT_RADIUS = (0.12, 0.18)
EXIT_SPEED = (0.05, 0.08)


def stable_seed(*parts: int | str) -> list[int]:
    """Seed material for np.random.default_rng from ints and names (names hashed with crc32)."""
    return [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]


# ---------------------------------------------------------------- categories


@dataclass(frozen=True)
class Category:
    id: int
    name: str  # "<colour> <shape>"
    colour: str
    shape: str
    partition: int  # LV-VIS style: 0 or 1 base, 2 or 3 novel
    frequency: str  # LVIS style: "f" or "c" base, "r" novel

    @property
    def is_novel(self) -> bool:
        return self.partition >= 2

    def record(self) -> dict:
        return {"id": self.id, "name": self.name, "partition": self.partition, "frequency": self.frequency,
                "colour": self.colour, "shape": self.shape}


def make_categories(colours: Sequence[str], shapes: Sequence[str], novel_fraction: float,
                    seed: int) -> list[Category]:
    """Every colour × shape, ids 1..N sorted by name, with a seeded base/novel split.

    Every colour and every shape occurs among both base and novel categories, so a novel category is
    a new combination of words seen in base ones. The novel count is round(N * novel_fraction),
    clamped so that this is possible. Base categories are half "f" (partition 0), half "c"
    (partition 1); novel ones are "r", partition 2 or 3 (half each).
    """
    _check_names(colours, COLOURS, "toy.colours", "colour")
    _check_names(shapes, SHAPES, "toy.shapes", "shape")
    if len(colours) < 2 or len(shapes) < 2:
        raise InputError(CONFIG_SOURCE, "toy.colours" if len(colours) < 2 else "toy.shapes",
                         "need at least 2 colours and 2 shapes to have every word in both base and novel")
    if not 0 < novel_fraction < 1:
        raise InputError(CONFIG_SOURCE, "toy.novel_fraction", f"must be between 0 and 1, got {novel_fraction}")
    rng = np.random.default_rng(stable_seed(seed, "categories"))
    cols = [colours[i] for i in rng.permutation(len(colours))]
    shps = [shapes[i] for i in rng.permutation(len(shapes))]
    n_cols, n_shps = len(cols), len(shps)
    cover = max(n_cols, n_shps)
    # Two disjoint transversals, each meeting every colour and every shape: one stays base, one is novel.
    base_cover = {(cols[k % n_cols], shps[k % n_shps]) for k in range(cover)}
    novel = {(cols[k % n_cols], shps[(k + 1) % n_shps]) if n_cols >= n_shps
             else (cols[(k + 1) % n_cols], shps[k % n_shps]) for k in range(cover)}
    cells = [(c, s) for c in colours for s in shapes]
    n_novel = min(max(round(len(cells) * novel_fraction), cover), len(cells) - cover)
    free = sorted(set(cells) - base_cover - novel)
    novel |= {free[i] for i in rng.choice(len(free), size=n_novel - cover, replace=False)}

    base_names = sorted(f"{c} {s}" for c, s in cells if (c, s) not in novel)
    novel_names = sorted(f"{c} {s}" for c, s in novel)
    partition = {}
    for names, (first, second) in ((base_names, (0, 1)), (novel_names, (2, 3))):
        for rank, i in enumerate(rng.permutation(len(names))):
            partition[names[i]] = first if rank < (len(names) + 1) // 2 else second
    frequency = {0: "f", 1: "c", 2: "r", 3: "r"}
    return [Category(id=i + 1, name=f"{c} {s}", colour=c, shape=s, partition=partition[f"{c} {s}"],
                     frequency=frequency[partition[f"{c} {s}"]])
            for i, (c, s) in enumerate(sorted(cells, key=lambda cell: f"{cell[0]} {cell[1]}"))]


def _check_names(names: Sequence[str], known, field: str, what: str) -> None:
    for i, name in enumerate(names):
        if name not in known:
            raise InputError(CONFIG_SOURCE, f"{field}[{i}]", f"unknown {what} {name!r} (known: {', '.join(known)})")
        if name in names[:i]:
            raise InputError(CONFIG_SOURCE, f"{field}[{i}]", f"{what} {name!r} is listed twice")


# ---------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneStyle:
    """How a dataset's scenes look. Lengths are fractions of the frame height."""

    frames: tuple[int, int]  # inclusive range of the number of frames
    objects: tuple[int, int]  # inclusive range of the number of objects
    radius: tuple[float, float]  # circumradius, drawn log-uniformly
    speed: tuple[float, float]  # per frame, for free and look-alike objects
    spread: float = 1.0  # free objects start within the central `spread` of the frame
    exits: int = 0  # objects that leave the frame and come back
    crossing_probability: float = 0.0  # chance of a look-alike pair (same category) crossing paths
    distinct_categories: bool = False


@dataclass
class SceneObject:
    category_id: int
    shape: str
    rgb: np.ndarray  # (3,) float, 0..255
    radius: float  # circumradius in pixels
    centres: np.ndarray  # (T, 2) x, y in pixels
    angles: np.ndarray  # (T,) rotation in radians
    role: str  # FREE, EXIT or LOOKALIKE


@dataclass
class Background:
    kind: str  # one of BACKGROUND_KINDS
    colours: np.ndarray  # (2, 3) float, the texture blends between them
    pan: np.ndarray  # (T, 2) camera offset as a fraction of the renderer's padding, 0..1
    seed: int  # the texture's details


@dataclass
class Scene:
    height: int
    width: int
    objects: list[SceneObject]  # back to front: later objects hide earlier ones
    background: Background
    gains: np.ndarray  # (T, 3) lighting gain per frame and channel
    noise_seed: int  # per-pixel sensor noise

    @property
    def num_frames(self) -> int:
        return len(self.gains)


def simulate_scene(rng: np.random.Generator, style: SceneStyle, categories: Sequence[Category],
                   weights: np.ndarray, height: int, width: int) -> Scene:
    """A random scene; `weights` (N,) are the chances of each category per object."""
    n_frames = int(rng.integers(style.frames[0], style.frames[1] + 1))
    n_objects = int(rng.integers(style.objects[0], style.objects[1] + 1))
    n_exits = min(style.exits, n_objects)
    has_pair = n_objects - n_exits >= 2 and rng.random() < style.crossing_probability
    ids = rng.choice(len(categories), size=n_objects, replace=not style.distinct_categories, p=weights)
    size = np.array([width, height], dtype=float)

    objects = []
    for i in range(n_objects):
        category = categories[ids[i]]
        rgb = np.clip(np.array(COLOURS[category.colour], dtype=float) + rng.normal(0, 8, 3), 0, 255)
        if i < n_exits:
            radius = _log_uniform(rng, *EXIT_RADIUS) * height
            role, centres = EXIT, _exit_path(rng, radius, size, n_frames)
        elif has_pair and i == n_exits:
            radius = _log_uniform(rng, style.radius[0], (style.radius[0] + style.radius[1]) / 2) * height
            first, second = _crossing_paths(rng, radius, style.speed, size, n_frames)
            objects.append(_with_spin(rng, category, rgb, radius, first, LOOKALIKE))
            role, centres = LOOKALIKE, second  # same category and colour as its partner: a look-alike
        elif has_pair and i == n_exits + 1:
            continue  # added with its partner above
        else:
            radius = _log_uniform(rng, *style.radius) * height
            role, centres = FREE, _free_path(rng, radius, style, size, n_frames)
        objects.append(_with_spin(rng, category, rgb, radius, centres, role))
    objects = [objects[i] for i in rng.permutation(len(objects))]  # random z-order

    t = np.arange(n_frames)
    pan_start, pan_end = rng.random(2), rng.random(2)
    pan = pan_start + (pan_end - pan_start) * (t / max(n_frames - 1, 1))[:, None]
    background = Background(kind=str(rng.choice(BACKGROUND_KINDS)), colours=rng.uniform(30, 225, (2, 3)),
                            pan=pan, seed=int(rng.integers(2**31)))
    flicker = 1 + 0.06 * np.sin(2 * math.pi * t / rng.uniform(6, 20) + rng.uniform(0, 2 * math.pi))
    flicker += rng.normal(0, 0.015, n_frames)
    gains = rng.uniform(0.9, 1.1, 3)[None, :] * flicker[:, None]
    return Scene(height=height, width=width, objects=objects, background=background, gains=gains,
                 noise_seed=int(rng.integers(2**31)))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _with_spin(rng: np.random.Generator, category: Category, rgb: np.ndarray, radius: float,
               centres: np.ndarray, role: str) -> SceneObject:
    angles = rng.uniform(0, 2 * math.pi) + rng.uniform(-0.1, 0.1) * np.arange(len(centres))
    return SceneObject(category_id=category.id, shape=category.shape, rgb=rgb, radius=radius,
                       centres=centres, angles=angles, role=role)


def _bounce(start: np.ndarray, velocity: np.ndarray, low: np.ndarray, high: np.ndarray,
            n_frames: int) -> np.ndarray:
    """(T, 2) positions moving at `velocity`, reflected off the walls `low` and `high` (each (2,))."""
    position, velocity = start.astype(float), velocity.astype(float)
    path = np.empty((n_frames, 2))
    for t in range(n_frames):
        path[t] = position
        position = position + velocity
        below, above = position < low, position > high
        position = np.where(below, 2 * low - position, np.where(above, 2 * high - position, position))
        position = np.clip(position, low, high)
        velocity = np.where(below | above, -velocity, velocity)
    return path


def _direction(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _free_path(rng: np.random.Generator, radius: float, style: SceneStyle, size: np.ndarray,
               n_frames: int) -> np.ndarray:
    """Starts inside the frame and bounces off its walls, staying whole in view."""
    low, high = np.full(2, radius), np.maximum(size - radius, radius)
    start = np.clip(size * (0.5 + style.spread * (rng.random(2) - 0.5)), low, high)
    velocity = _direction(rng.uniform(0, 2 * math.pi)) * rng.uniform(*style.speed) * size[1]
    return _bounce(start, velocity, low, high, n_frames)


def _exit_path(rng: np.random.Generator, radius: float, size: np.ndarray, n_frames: int) -> np.ndarray:
    """Leaves the frame through one edge, is out of view for a few frames, and comes back.

    Along the exit axis the wall sits `gap` beyond the point where the object is fully out, so it is
    hidden for about 2 * gap / speed frames; it starts with its centre inside the frame and turns
    back at frame (radius + gap) / speed + a little.
    """
    axis = int(rng.integers(2))
    outward = 1.0 if rng.random() < 0.5 else -1.0
    speed = rng.uniform(*EXIT_SPEED) * size[1]
    gap = speed * rng.uniform(1.0, 2.5)
    turn = (radius + gap) / speed + rng.uniform(0, n_frames / 6)
    low, high = np.full(2, radius), size - radius
    low[axis], high[axis] = -(radius + gap), size[axis] + radius + gap
    start = rng.uniform(low, high)
    edge = size[axis] if outward > 0 else 0.0
    start[axis] = edge + outward * (radius + gap - speed * turn)  # reaches the wall at frame `turn`
    velocity = np.zeros(2)
    velocity[axis] = outward * speed
    velocity[1 - axis] = rng.uniform(-0.3, 0.3) * speed
    return _bounce(start, velocity, low, high, n_frames)


def _crossing_paths(rng: np.random.Generator, radius: float, speed: tuple[float, float], size: np.ndarray,
                    n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Two paths through the same point at the same frame, from different directions."""
    low, high = np.full(2, radius), np.maximum(size - radius, radius)
    meet = np.clip(size * rng.uniform(0.3, 0.7, 2), low, high)
    meet_frame = rng.uniform(0.35, 0.65) * (n_frames - 1)
    first_angle = rng.uniform(0, 2 * math.pi)
    angles = (first_angle, first_angle + rng.choice([-1, 1]) * rng.uniform(math.pi / 3, 5 * math.pi / 6))
    paths = []
    for angle in angles:
        direction = _direction(angle)
        velocity = direction * rng.uniform(*speed) * size[1]
        if meet_frame > 0:  # slow down if needed so that the start lies inside the frame
            room = np.where(direction > 0, meet - low, high - meet) / np.maximum(np.abs(direction), 1e-9)
            velocity *= min(1.0, room.min() / (np.linalg.norm(velocity) * meet_frame + 1e-9))
        paths.append(_bounce(meet - velocity * meet_frame, velocity, low, high, n_frames))
    return paths[0], paths[1]
