
import numpy as np
import pytest
import torch
from PIL import Image

from clipvis.errors import InputError
from clipvis.model.postprocess import resize_for_inference
from clipvis.video.frames import image_file_frames, open_frames
from clipvis.reports.overlays import write_mp4

COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (240, 240, 20)]


def solid(colour, height=32, width=48):
    return np.full((height, width, 3), colour, dtype=np.uint8)


def test_folder_frames_in_name_order(tmp_path):
    for name, colour in [("00002.png", COLOURS[2]), ("00000.png", COLOURS[0]), ("00001.png", COLOURS[1])]:
        Image.fromarray(solid(colour)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    source = open_frames(tmp_path)
    assert (source.height, source.width, source.length) == (32, 48, 3)
    frames = list(source)
    assert [tuple(f[:, 0, 0].tolist()) for f in frames] == COLOURS[:3]
    assert all(f.shape == (3, 32, 48) and f.dtype == torch.uint8 for f in frames)
    assert len(list(source)) == 3  # iterable again


def test_video_file_frames(tmp_path):
    path = tmp_path / "clip.mp4"
    write_mp4(path, [solid(c) for c in COLOURS], fps=5)
    source = open_frames(path)
    assert (source.height, source.width, source.fps) == (32, 48, 5.0)
    frames = list(source)
    assert len(frames) == 4
    for frame, colour in zip(frames, COLOURS):  # lossy codec: close to the solid colour
        assert frame.shape == (3, 32, 48)
        assert np.abs(frame.float().mean((1, 2)).numpy() - colour).max() < 12


def test_missing_frame_names_the_file(tmp_path):
    Image.fromarray(solid(COLOURS[0])).save(tmp_path / "a.png")
    source = image_file_frames([tmp_path / "a.png", tmp_path / "b.png"], 32, 48, listed_in="videos.json")
    frames = iter(source)
    next(frames)
    with pytest.raises(InputError, match="b.png.*not found"):
        next(frames)


def test_unreadable_files_are_input_errors(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"this is not a video")
    with pytest.raises(InputError, match="bad.mp4.*cannot read the video"):
        open_frames(tmp_path / "bad.mp4")
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="0.jpg.*cannot read the image"):
        open_frames(folder)
    with pytest.raises(InputError, match="no such video file"):
        open_frames(tmp_path / "missing.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no frames"):
        open_frames(empty)


def test_frames_of_another_size_are_refused(tmp_path):
    Image.fromarray(solid(COLOURS[0])).save(tmp_path / "0.png")
    Image.fromarray(solid(COLOURS[1], height=30)).save(tmp_path / "1.png")
    with pytest.raises(InputError, match="1.png"):
        list(open_frames(tmp_path))


@pytest.mark.parametrize("size, expected", [
    ((64, 80), (48, 60)),  # short side to 48
    ((100, 1000), (133, 1333)),  # long side capped: 480 x 4800 shrunk by 1333/4800, rounded half up
    ((48, 30), (77, 48)),  # upscaling: 30 -> 48, 48 * 1.6 = 76.8
])
@pytest.mark.parametrize("method", ["pil", "torch"])
def test_resize_shortest_edge(size, expected, method):
    min_size, max_size = (480, 1333) if size == (100, 1000) else (48, 1333)
    frame = torch.zeros(3, *size, dtype=torch.uint8)
    assert tuple(resize_for_inference(frame, min_size, max_size, method).shape) == (3, *expected)


@pytest.mark.parametrize("method", ["pil", "torch"])
def test_resize_keeps_a_constant_image(method):
    frame = torch.full((3, 40, 60), 77, dtype=torch.uint8)
    resized = resize_for_inference(frame, 20, 1333, method)
    assert resized.shape == (3, 20, 30) and (resized == 77).all()


def test_pil_resize_is_pils_bilinear_and_torch_stays_within_two_grey_levels():
    """"pil" is what detectron2 does to a test frame (PIL bilinear on the HWC array); torch's antialiased
    bilinear is an approximation of it."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (100, 130, 3), dtype=np.uint8)  # shrunk by 2.08: the two round differently
    expected = np.asarray(Image.fromarray(pixels).resize((62, 48), Image.Resampling.BILINEAR))
    frame = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    pil = resize_for_inference(frame, 48, 1333, "pil")
    assert np.array_equal(pil.permute(1, 2, 0).numpy(), expected)
    difference = (resize_for_inference(frame, 48, 1333, "torch").int() - pil.int()).abs()
    assert 0 < difference.max() <= 2


def test_unknown_resize_method_is_a_config_error():
    with pytest.raises(InputError, match="infer.resize"):
        resize_for_inference(torch.zeros(3, 40, 60, dtype=torch.uint8), 20, 1333, "nearest")
