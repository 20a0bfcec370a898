"""Streaming video inference (docs/method.md §7), with memory flat in video length.

    frames, `frames_per_chunk` at a time (one on CPU) -> network (no aux outputs) -> each frame's queries put in
    track slots by the TemporalMatcher -> per-frame CLIP class logits of the aligned masks ->
    running sums of the video scores (§7.6) -> at the end: top-k (slot, class) pairs, per-frame
    suppression and mask score (§7.7–§7.9) -> YTVIS records with one RLE per frame (§7.10).

The authors keep every frame's stride-4 masks and CLIP maps until the video ends. Here a frame is
reduced, as soon as it is matched, to what the end of the video needs, per track slot:

- in memory, a few numbers: the object probability o_t = softmax(object logits)[object], and the
  two mask-score terms at stride 4 over the padded frame (as the reference): the sum of
  sigmoid(logit) over the pixels with logit > 0, and their number;
- in an unnamed temporary file: the mask at the original resolution (bilinear to the padded input,
  crop, bilinear to the original size, logit > 0) as compressed RLE, and the class probabilities
  p_t (C floats). Only the selected slots' masks and the probabilities that the suppression test
  needs are read back. The masks are encoded once per frame, in the network's query order, and
  every variant's matching only reorders them. `stream_video_variants` reads each record's masks
  back only when the record is taken, so a caller that writes records out one at a time (as
  `clipvis infer` does) never holds a whole video's output.

A frame's mask is suppressed for a selected (slot, class) when sqrt(sigmoid(p_t[class]) · o_t) <
0.1 · s (s: the pair's video score). As sigmoid(p) >= 0.5, only frames with o_t < 0.02 · s² can be
suppressed, so only those class probabilities are looked up. Suppressed frames get an empty mask
and add nothing to the mask score m = Σ sigmoid / (Σ count + 1e-6); the final score is s · m.

On CPU the network takes one frame at a time, and the glibc heap keeps freed buffers for the next
frame (`clipvis.heap`): no page faults per frame. The heap gives its free memory back every 25 frames
and after each video, so that fragmentation cannot build up: resident memory stays flat in video length.

Each video also counts how often matching changed the query that fills a slot showing an object
(`SlotSwitches`): when the strategies differ in AP, or do not, this says how much matching acted.
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from clipvis.config import Config, ScoringConfig
from clipvis.errors import InputError
from clipvis.heap import keep_freed_memory, release_free_memory
from clipvis.model.clipvis_model import CLIPVIS
from clipvis.model.postprocess import (MASK_SCORE_EPS, empty_rle, encode_frame_masks, mask_score_terms,
                                      resize_for_inference)
from clipvis.model.weighted_scores import VideoScoreSums
from clipvis.model.text_classifier import TextEmbeddings
from clipvis.video.query_matching import TemporalMatcher

log = logging.getLogger(__name__)

RELEASE_EVERY_FRAMES = 25  # on CPU, free heap memory goes back to the system this often (see clipvis.heap)
SUPPRESSION_FACTOR = 0.1  # a frame is suppressed when its score is below 0.1 x the video score
# sigmoid(p) >= 0.5, so a frame can only be suppressed when o_t < 0.02 s²; the margin absorbs rounding.
SUPPRESSIBLE_OBJECT_PROB = 2 * SUPPRESSION_FACTOR ** 2 * 1.05
OBJECT_SHOWN = 0.5  # a slot shows an object when its object probability is at least this


def build_matcher(cfg: Config) -> TemporalMatcher:
    m = cfg.matching
    try:
        return TemporalMatcher(m.strategy, m.memory, m.topk, m.recency_weighting)
    except ValueError as error:
        key = str(error).split()[0]  # the message starts with the name of the bad setting
        raise InputError("config", f"matching.{key}", str(error)) from None


def segment_video(model: CLIPVIS, frames: Iterable[torch.Tensor], text: TextEmbeddings, cfg: Config,
                  video_id: int | str = 1, category_ids: list[int] | None = None,
                  timings: dict[str, float] | None = None,
                  on_frames: Callable[[int], None] | None = None) -> list[dict]:
    """Segment one video: frames (3, H, W) uint8 RGB at the original size -> YTVIS result records.

    Records are ``{video_id, score, category_id, segmentations}``, best score first; `category_ids`
    maps a vocabulary index to the category id written (default: index + 1). `timings` (if given)
    accumulates seconds per part: resize, model, classification, matching, postprocess, and within
    postprocess (also counted there) upsample, rle and spill (the temporary file). `on_frames(n)` is
    called after every chunk of n frames.
    """
    return segment_video_variants(model, frames, text, {"": cfg}, video_id, category_ids, timings, on_frames)[""]


def segment_video_variants(model: CLIPVIS, frames: Iterable[torch.Tensor], text: TextEmbeddings,
                           variants: dict[str, Config], video_id: int | str = 1,
                           category_ids: list[int] | None = None, timings: dict[str, float] | None = None,
                           on_frames: Callable[[int], None] | None = None,
                           switches: dict[str, SlotSwitches] | None = None) -> dict[str, list[dict]]:
    """`segment_video` for several test-time variants (matching and scoring settings) in one pass.

    The network runs once per frame; each variant has its own matcher, score sums and selection.
    Settings other than `matching` and `scoring` come from the first variant. `switches` (if given)
    accumulates each variant's slot switches.
    """
    with stream_video_variants(model, frames, text, variants, video_id, category_ids, timings, on_frames,
                               switches) as records:
        return {name: list(variant_records) for name, variant_records in records.items()}


@contextmanager
def stream_video_variants(model: CLIPVIS, frames: Iterable[torch.Tensor], text: TextEmbeddings,
                          variants: dict[str, Config], video_id: int | str = 1,
                          category_ids: list[int] | None = None, timings: dict[str, float] | None = None,
                          on_frames: Callable[[int], None] | None = None,
                          switches: dict[str, SlotSwitches] | None = None) -> Iterator[dict[str, Iterator[dict]]]:
    """`segment_video_variants` whose records come one at a time, each read from the temporary file when
    it is taken: a caller that writes each record out before taking the next never holds the whole
    video's output. The records must be taken inside the `with` block (the file is deleted when it ends)."""
    cfg = next(iter(variants.values()))
    if cfg.infer.frames_per_chunk < 1:
        raise InputError("config", "infer.frames_per_chunk", f"must be >= 1, got {cfg.infer.frames_per_chunk}")
    device = model.clip.pixel_mean.device
    if device.type == "cpu":
        keep_freed_memory()
    timer = _Timer(timings, device)
    matchers = {name: build_matcher(variant) for name, variant in variants.items()}
    videos: dict[str, StreamingVideo] = {}
    since_release = 0
    try:
        for chunk in frame_chunks(frames, frames_per_chunk(cfg, device)):
            network = network_chunk(model, chunk, text, cfg, timer)
            for name, variant in variants.items():
                aligned = align_chunk(network, matchers[name], timer)
                with timer("postprocess"):
                    if name not in videos:
                        videos[name] = StreamingVideo(aligned.mask_logits.shape[1], text.num_classes,
                                                      variant.scoring, aligned.original_size, timer)
                    videos[name].add(aligned)
            since_release += len(chunk)
            if since_release >= RELEASE_EVERY_FRAMES:
                release_free_memory()
                since_release = 0
            if on_frames:
                on_frames(len(chunk))
        if not videos:
            raise InputError(str(video_id), "", "the video has no frames")
        if switches is not None:
            for name, video in videos.items():
                switches.setdefault(name, SlotSwitches()).add(video.switches)
        yield {name: videos[name].results(variant.scoring.detections_per_video, video_id, category_ids)
               for name, variant in variants.items()}
    finally:
        for video in videos.values():
            video.close()
        release_free_memory()


def frames_per_chunk(cfg: Config, device: torch.device) -> int:
    """Frames the network takes at once: `infer.frames_per_chunk` on an accelerator, 1 on CPU.

    On CPU a batch of frames is no faster per frame than one frame (the layers are large matrix
    products either way), and its buffers grow with the batch: 10 frames of 480×640 need 4.5 GB
    against 1.9 GB. Frames are independent in the network, so the outputs are the same.
    """
    return 1 if device.type == "cpu" else cfg.infer.frames_per_chunk


@dataclass
class AlignedFrames:
    """Network outputs of B frames with every frame's queries in track-slot order (or in network
    order, before matching)."""

    object_logits: torch.Tensor  # (B, Q, 2)
    ious: torch.Tensor  # (B, Q)
    mask_logits: torch.Tensor  # (B, Q, Hp/4, Wp/4)
    class_logits: torch.Tensor  # (B, Q, C)
    padded_size: tuple[int, int]  # network input (Hp, Wp)
    image_size: tuple[int, int]  # resized frame (h, w)
    original_size: tuple[int, int]  # (H, W)
    mask_rles: list[list[str]]  # (B, Q) each mask at the original resolution, compressed RLE counts
    embeddings: torch.Tensor | None = None  # (B, Q, D) query embeddings, for matching
    perms: torch.Tensor | None = None  # (B, Q) after matching: slot j of frame b holds query perms[b, j]


@dataclass
class SlotSwitches:
    """How often matching put another query than in the previous frame into a slot showing an object.

    `object_slots` counts the (frame, slot) pairs after a video's first frame whose object probability
    is at least 0.5; `switches` those of them whose query differs from the previous frame's.
    """

    object_slots: int = 0
    switches: int = 0

    def add(self, other: SlotSwitches) -> None:
        self.object_slots += other.object_slots
        self.switches += other.switches

    def rate(self) -> float | None:
        return self.switches / self.object_slots if self.object_slots else None


@torch.inference_mode()
def network_chunk(model: CLIPVIS, chunk: list[torch.Tensor], text: TextEmbeddings, cfg: Config,
                  timer: _Timer | None = None) -> AlignedFrames:
    """The network's outputs for a chunk of frames, queries in network order.

    Classification pools each query's own mask, so classifying before matching and permuting the
    logits equals classifying the aligned masks.
    """
    timer = timer or UNTIMED
    with timer("resize"):
        resized = [resize_for_inference(frame, cfg.infer.min_size, cfg.infer.max_size, cfg.infer.resize)
                   for frame in chunk]
    with timer("model"):
        images = model.preprocess(resized)  # (B, 3, Hp, Wp)
        outputs = model.infer(images, bf16=cfg.infer.precision == "bf16", compiled=cfg.infer.compile,
                              onednn_linear=cfg.infer.onednn_linear)
    with timer("classification"):
        class_logits = model.class_logits(outputs["clip_dense"], outputs["pred_masks"], text)
    padded_size, image_size = tuple(images.shape[-2:]), tuple(resized[0].shape[-2:])
    original_size = tuple(chunk[0].shape[-2:])
    with timer("postprocess"):  # once per frame, whatever the number of variants matching it
        rles = [encode_frame_masks(mask_logits, padded_size, image_size, original_size, timer)
                for mask_logits in outputs["pred_masks"]]
    return AlignedFrames(outputs["pred_object_logits"], outputs["pred_ious"][..., 0], outputs["pred_masks"],
                         class_logits, padded_size, image_size, original_size, rles, outputs["pred_embds"])


@torch.inference_mode()
def align_chunk(network: AlignedFrames, matcher: TemporalMatcher, timer: _Timer | None = None) -> AlignedFrames:
    """Put every frame's queries in track-slot order with the (stateful) matcher (anything with its `step`)."""
    timer = timer or UNTIMED
    with timer("matching"):
        perms = torch.stack([matcher.step(embeddings) for embeddings in network.embeddings])
        perms = perms.to(network.mask_logits.device)  # (B, Q): slot j of frame b takes query perms[b, j]
        rles = [[frame_rles[query] for query in perm] for frame_rles, perm in zip(network.mask_rles, perms.tolist())]
        return AlignedFrames(_align(network.object_logits, perms), _align(network.ious, perms),
                             _align(network.mask_logits, perms), _align(network.class_logits, perms),
                             network.padded_size, network.image_size, network.original_size, rles, perms=perms.cpu())


class StreamingVideo:
    """What the end of a video needs, gathered frame by frame (see the module docstring).

    Call `close` when done, to delete the temporary file.
    """

    def __init__(self, queries: int, classes: int, scoring: ScoringConfig, output_size: tuple[int, int],
                 timer: _Timer | None = None):
        self.output_size = output_size
        self.timer = timer or UNTIMED
        self.score_sums = VideoScoreSums.empty(queries, classes, scoring)
        self.spilled = SpilledFrames(queries, classes)
        self._object_probs: list[torch.Tensor] = []  # per chunk (B, Q)
        self._mask_sums: list[torch.Tensor] = []  # per chunk (B, Q) float64: Σ sigmoid over logit > 0
        self._mask_counts: list[torch.Tensor] = []  # per chunk (B, Q) int64: number of pixels with logit > 0
        self.switches = SlotSwitches()
        self._last_perm: torch.Tensor | None = None  # (Q,) the previous frame's perm

    def add(self, frames: AlignedFrames) -> None:
        if frames.original_size != self.output_size:
            raise ValueError(f"frames of size {frames.original_size} in a video of size {self.output_size}")
        class_logits = frames.class_logits.float()
        self.score_sums.add(class_logits.cpu(), frames.ious.float().cpu(), frames.object_logits.float().cpu())
        self._object_probs.append(frames.object_logits.float().softmax(-1)[..., 0].cpu())
        if frames.perms is not None:
            self._count_switches(frames.perms, self._object_probs[-1])
        sums, counts = mask_score_terms(frames.mask_logits)
        self._mask_sums.append(sums.cpu())
        self._mask_counts.append(counts.cpu())
        for probs, rles in zip(class_logits.softmax(-1), frames.mask_rles):
            with self.timer("spill"):
                self.spilled.append(probs, rles)

    def _count_switches(self, perms: torch.Tensor, object_probs: torch.Tensor) -> None:
        """perms, object_probs: (B, Q) in slot order."""
        chained = perms if self._last_perm is None else torch.cat([self._last_perm[None], perms])
        changed = chained[1:] != chained[:-1]  # (frames after the first, Q)
        showing = object_probs[len(object_probs) - len(changed):] >= OBJECT_SHOWN
        self.switches.add(SlotSwitches(int(showing.sum()), int((changed & showing).sum())))
        self._last_perm = perms[-1]

    def results(self, k: int, video_id: int | str, category_ids: list[int] | None = None) -> Iterator[dict]:
        """YTVIS records of the top-k (slot, class) pairs, best final score first, each read from the
        temporary file as it is taken."""
        with self.timer("postprocess"):
            selection = select_instances(
                self.score_sums.scores(), torch.cat(self._object_probs), self.spilled,
                torch.cat(self._mask_sums), torch.cat(self._mask_counts), k)
        height, width = self.output_size
        for query, label, score, kept in zip(selection.queries.tolist(), selection.labels.tolist(),
                                             selection.scores.tolist(), selection.kept.tolist()):
            with self.timer("postprocess"):
                segmentations = [{"size": [height, width], "counts": self.spilled.mask_counts(frame, query)
                                  if keep else empty_rle(self.output_size)} for frame, keep in enumerate(kept)]
            yield {"video_id": video_id, "score": score,
                   "category_id": category_ids[label] if category_ids else label + 1,
                   "segmentations": segmentations}

    def close(self) -> None:
        """Delete the temporary file."""
        self.spilled.close()


@dataclass
class Selection:
    """The chosen (slot, class) pairs, best final score first."""

    queries: torch.Tensor  # (k,) track slot
    labels: torch.Tensor  # (k,) vocabulary index
    scores: torch.Tensor  # (k,) final score s · m
    video_scores: torch.Tensor  # (k,) s
    mask_scores: torch.Tensor  # (k,) m
    kept: torch.Tensor  # (k, F) bool: False where the frame's mask is suppressed


def select_instances(video_scores: torch.Tensor, object_probs: torch.Tensor, class_probs,
                     mask_sums: torch.Tensor, mask_counts: torch.Tensor, k: int) -> Selection:
    """Top-k selection, per-frame suppression and mask score (docs/method.md §7.7–§7.9).

    video_scores (Q, C); object_probs (F, Q) per-frame o_t; class_probs indexable as
    ``class_probs[frames, queries, labels]`` -> per-frame class probabilities (a (F, Q, C) tensor or
    SpilledFrames); mask_sums, mask_counts (F, Q) the stride-4 mask-score terms.
    A slot may be chosen with several labels.
    """
    queries_count, classes = video_scores.shape
    video_top, index = video_scores.flatten().topk(min(k, queries_count * classes))
    queries, labels = index // classes, index % classes

    # Frames that may be suppressed: o_t < 0.02 s² (with margin); their p_t[label] is looked up.
    selected_object_probs = object_probs[:, queries].T  # (k, F)
    maybe = selected_object_probs < SUPPRESSIBLE_OBJECT_PROB * video_top[:, None] ** 2
    pick, frames = maybe.nonzero(as_tuple=True)
    probs = torch.as_tensor(class_probs[frames, queries[pick], labels[pick]], dtype=torch.float32)
    frame_scores = (probs.sigmoid() * selected_object_probs[pick, frames]) ** 0.5
    kept = torch.ones_like(maybe)
    kept[pick, frames] = ~(frame_scores < video_top[pick] * SUPPRESSION_FACTOR)

    positive_sum = (mask_sums[:, queries].T.double() * kept).sum(1)
    positive_count = (mask_counts[:, queries].T.double() * kept).sum(1)
    mask_scores = (positive_sum / (positive_count + MASK_SCORE_EPS)).float()
    scores = video_top * mask_scores
    order = scores.argsort(descending=True, stable=True)
    return Selection(queries[order], labels[order], scores[order], video_top[order], mask_scores[order],
                     kept[order])


class SpilledFrames:
    """Per frame, the (Q, C) class probabilities and the Q mask RLEs, appended to an unnamed temporary file.

    Only what is asked for is read back: ``store[frames, queries, labels]`` gives those class
    probabilities (1-D index tensors, as indexing a (F, Q, C) tensor), `mask_counts(frame, query)` an RLE.
    What stays in memory is Q + 1 file offsets per frame.
    """

    def __init__(self, queries: int, classes: int, directory: str | Path | None = None):
        self.queries, self.classes = queries, classes
        self._file = tempfile.TemporaryFile(dir=directory)
        self._size = 0
        self._unflushed = False
        self._offsets: list[np.ndarray] = []  # per frame (Q + 1,): start of its probabilities, then of each RLE

    def append(self, probs: torch.Tensor, mask_counts: list[str]) -> None:
        """One frame: probs (Q, C), mask_counts Q compressed RLE counts strings."""
        blobs = [probs.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()]
        blobs += [counts.encode("ascii") for counts in mask_counts]
        self._offsets.append(self._size + np.cumsum([0] + [len(blob) for blob in blobs[:-1]], dtype=np.int64))
        for blob in blobs:
            self._file.write(blob)
            self._size += len(blob)
        self._unflushed = True

    def __getitem__(self, index: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        frames, queries, labels = (torch.as_tensor(i, dtype=torch.int64).reshape(-1).tolist() for i in index)
        values = [np.frombuffer(self._read(int(self._offsets[t][0]) + 4 * (q * self.classes + c), 4), np.float32)[0]
                  for t, q, c in zip(frames, queries, labels)]
        return torch.tensor(np.array(values, dtype=np.float32))

    def mask_counts(self, frame: int, query: int) -> str:
        offsets = self._offsets[frame]
        end = offsets[query + 2] if query + 2 < len(offsets) else self._next_frame_start(frame)
        return self._read(int(offsets[query + 1]), int(end - offsets[query + 1])).decode("ascii")

    def close(self) -> None:
        self._file.close()

    def _next_frame_start(self, frame: int) -> int:
        return int(self._offsets[frame + 1][0]) if frame + 1 < len(self._offsets) else self._size

    def _read(self, offset: int, length: int) -> bytes:
        if self._unflushed:
            self._file.flush()
            self._unflushed = False
        self._file.seek(offset)
        return self._file.read(length)


class _Timer:
    """Adds the seconds spent in named blocks to a dict (nothing when the dict is None)."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device):
        self.timings = timings
        self.synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        self.synchronize()
        start = time.perf_counter()
        yield
        self.synchronize()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


UNTIMED = _Timer(None, torch.device("cpu"))


def _align(tensor: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """tensor (B, Q, ...) with its queries reordered by perms (B, Q)."""
    index = perms.view(*perms.shape, *([1] * (tensor.dim() - 2))).expand_as(tensor)
    return tensor.gather(1, index)


def frame_chunks(frames: Iterable[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    """Frames in lists of `size` (the last one may be shorter)."""
    chunk = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
