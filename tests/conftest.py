import os

# Tests never reach a model hub or telemetry endpoint.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import numpy as np  # noqa: E402
import pycocotools.mask as mask_api  # noqa: E402
import pytest  # noqa: E402

from clipvis.config import ToyWorldConfig, load_config  # noqa: E402

TINY_WORLD = ToyWorldConfig(frame_size=48, min_frames=12, max_frames=14, train_images=8, train_videos=2,
                            val_videos=2, ovis_videos=1, caption_images=20, heldout_captions=10,
                            val_images=4)

# A CPU-second-sized segmenter on a random-weight toy CLIP: the real architecture, tiny widths.
TINY_MODEL = ["clip.pretrained=null", "model.hidden_dim=32", "model.num_queries=8", "model.heads=4",
              "model.dec_layers=3", "model.dec_ffn_dim=64", "model.enc_layers=1", "model.enc_ffn_dim=64",
              "model.mask_dim=32", "train.batch_size=2", "train.image_size=64", "train.num_points=256",
              "train.amp=false", "train.num_workers=0", "infer.min_size=48", "infer.frames_per_chunk=3"]


class FakeMlflow:
    """Stands in for the `mlflow` module a stage run yields: keeps what is logged in a dict."""

    def __init__(self, logged):
        self.logged = logged

    def log_metrics(self, metrics):
        self.logged.update(metrics)

    def log_artifact(self, path):
        self.logged.setdefault("artifacts", []).append(path)


@pytest.fixture(scope="session", autouse=True)
def private_mlflow_store(tmp_path_factory):
    """Runs logged by tests go to a store of their own, never the project's runs/mlflow.db (a test may
    still point MLFLOW_TRACKING_URI elsewhere)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
    yield
    patch.undo()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A tiny toy world (data root) shared by the tests that only read it."""
    from clipvis.toy.generate import generate_toy_world

    root = tmp_path_factory.mktemp("data")
    generate_toy_world(TINY_WORLD, root, samples_path=None)
    return root


@pytest.fixture
def tiny_config(tiny_world):
    """The toy params with the tiny model, reading the tiny world."""
    return load_config("params/toy/default.yaml", TINY_MODEL + [f"data.root={tiny_world}"])


def rle(mask) -> dict:
    """A (H, W) bool mask as COCO compressed RLE with text counts (the results-file form)."""
    encoded = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": encoded["counts"].decode("ascii")}
