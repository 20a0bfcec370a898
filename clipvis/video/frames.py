"""Lazy frame readers: a folder of images, a list of files under an image root, or a video file.

A `FrameSource` knows its frame size up front and decodes one frame at a time when iterated, as
uint8 RGB (3, H, W) at the original size; it can be iterated again (the `segment` command reads the
video twice: once to segment, once to draw). Every frame of a source must have the same size.
`resize_for_inference` then applies the test-time ResizeShortestEdge (short side 480 at paper scale).

A missing or unreadable file raises InputError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import av
import numpy as np
import torch
from PIL import Image, ImageOps

from clipvis.data.datasets import read_rgb
from clipvis.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".mkv")
DEFAULT_FPS = 10.0  # frame rate assumed for image folders


@dataclass(frozen=True)
class FrameSource:
    """A video's frames, decoded lazily each time the source is iterated."""

    name: str
    height: int
    width: int
    length: int | None  # number of frames when known without decoding
    fps: float
    _frames: Callable[[], Iterator[torch.Tensor]]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self._frames()


def open_frames(path: str | Path) -> FrameSource:
    """A folder of JPEG/PNG frames (in file-name order) or a video file (mp4, webm, avi, ...)."""
    path = Path(path)
    if path.is_dir():
        return folder_frames(path)
    if not path.exists():
        raise InputError(path, "", "no such video file or frame folder")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return video_file_frames(path)
    raise InputError(path, "", f"expected a frame folder or a video file ({', '.join(VIDEO_SUFFIXES)})")


def folder_frames(folder: str | Path) -> FrameSource:
    """Every JPEG/PNG file of `folder`, sorted by name."""
    folder = Path(folder)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(folder, "", f"no frames ({', '.join(IMAGE_SUFFIXES)} files) in the folder")
    height, width = _image_size(paths[0])
    return image_file_frames(paths, height, width, listed_in=folder, name=folder.name)


def image_file_frames(paths: Sequence[Path], height: int, width: int, listed_in: str | Path,
                      name: str = "", fps: float = DEFAULT_FPS) -> FrameSource:
    """Frames from image files that must all be height x width (e.g. a benchmark video's file_names)."""
    paths = list(paths)

    def frames() -> Iterator[torch.Tensor]:
        for path in paths:
            yield read_rgb(path, height, width, listed_in)

    return FrameSource(name, height, width, len(paths), fps, frames)


def video_file_frames(path: str | Path) -> FrameSource:
    """The first video stream of a file, decoded with PyAV."""
    path = Path(path)
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        height, width = stream.codec_context.height, stream.codec_context.width
        length = stream.frames or None
        fps = float(stream.average_rate) if stream.average_rate else DEFAULT_FPS
    if height <= 0 or width <= 0:
        raise InputError(path, "", "the video stream has no frame size")

    def frames() -> Iterator[torch.Tensor]:
        with _open_container(path) as container:
            try:
                for frame in container.decode(_video_stream(container, path)):
                    rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                    if rgb.shape[:2] != (height, width):
                        raise InputError(path, f"frame {frame.index}", f"is {rgb.shape[0]}x{rgb.shape[1]} (height x "
                                                                       f"width), the video is {height}x{width}")
                    yield torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
            except av.error.FFmpegError as error:
                raise InputError(path, "", f"cannot decode the video ({error})") from None

    return FrameSource(path.stem, height, width, length, fps, frames)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image, EXIF orientation applied."""
    try:
        with Image.open(path) as opened:
            width, height = ImageOps.exif_transpose(opened).size
    except OSError as error:
        raise InputError(path, "", f"cannot read the image ({error})") from None
    return height, width


def _open_container(path: Path):
    try:
        return av.open(str(path))
    except FileNotFoundError:
        raise InputError(path, "", "video file not found") from None
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise InputError(path, "", f"cannot read the video ({error})") from None


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise InputError(path, "", "the file has no video stream")
    return container.streams.video[0]
