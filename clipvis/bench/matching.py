"""The matching test (`clipvis matching-test`): the temporal matching strategies on a controlled problem, a table the paper lacks.

The trained network runs once over every video of a benchmark. For each noise level, every frame's
queries then reach the matcher in a random order, with Gaussian noise added to their embeddings (of
`noise` times the embedding's norm, on average), so that every frame needs matching and the embeddings
are less alike than the network made them. Every strategy (a test-time variant of params/variants.yaml)
sees the same shuffles and noise. Each is scored on

- identity recovery: in every frame, each ground-truth object is owned by the query whose stride-4 mask
  overlaps it best (IoU >= 0.5, at most one query per object); a frame is right when every owned
  object that was owned before sits in the track slot it had when it was first owned. The share of
  right frames among the frames with such an object;
- video AP, APb and APn of the tracks it builds, as `clipvis score` computes them.

The first row is the network's own query order (no shuffle, no noise, no matching): how well its
queries keep their objects by themselves.

Beside the rows, `handovers` says what matching has to work with (`QueryHandovers`): how often an object
held by a confident query passes to another query from one frame to the next in the network's own order,
and whether the query embeddings follow it there or stay with the query.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from clipvis.config import Config
from clipvis.errors import InputError
from clipvis.files import write_json
from clipvis.layout import MATCHING_TEST_FILE
from clipvis.tracking import stage_run
from clipvis.video.inference import OBJECT_SHOWN

log = logging.getLogger(__name__)

NETWORK_ORDER = "network order"
OWNER_IOU = 0.5  # a query owns a ground-truth object in a frame when their masks overlap at least this much
METRICS = ("AP", "APb", "APn")


def run_matching_test(cfg: Config, variants: dict, benchmark: str, checkpoint: str | Path,
                      noise_levels: list[float], out_dir: str | Path, root: str | Path | None = None) -> Path:
    """`matching_test` logged as an MLflow run (stage matching_test); writes and returns OUT/matching_test.json."""
    if any(level < 0 for level in noise_levels):
        raise InputError("--noise", " ".join(map(str, noise_levels)), "noise levels must be 0 or more")
    out = Path(out_dir) / MATCHING_TEST_FILE
    with stage_run(cfg, "matching_test", run_name=f"matching test {benchmark}", tags={"benchmark": benchmark}) as mlflow:
        report = matching_test(cfg, variants, benchmark, checkpoint, noise_levels, root)
        write_json(out, report, indent=1)
        mlflow.log_artifact(str(out))
    return out


def matching_test(cfg, variants: dict, benchmark_name: str, checkpoint: str | Path, noise_levels: list[float],
                  root: str | Path | None = None) -> dict:
    """{"benchmark", "noise_levels", "rows": [{variant, noise, identity_recovery, frames, AP, APb, APn}],
    "handovers": QueryHandovers.summary(), "object_shown": its confidence threshold}; rows: the network order,
    then every variant at every noise level."""
    from clipvis.data.registry import get_benchmark, resolve_root
    from clipvis.data.formats import load_video_gt
    from clipvis.data.vocabularies import categories
    from clipvis.evaluation.video_ap import evaluate_videos
    from clipvis.model.checkpoint import inference_device, load_model
    from clipvis.model.text_classifier import text_embeddings
    from clipvis.video import inference
    from clipvis.video.frames import image_file_frames

    benchmark = get_benchmark(benchmark_name)
    if benchmark.kind != "video" or not benchmark.has_public_gt:
        raise InputError("--benchmark", benchmark_name, "needs a video benchmark with ground truth")
    root = resolve_root(root, cfg.data.root)
    annotation_path, image_root = benchmark.annotation_path(root), benchmark.image_path(root)
    gt = load_video_gt(annotation_path)
    model = load_model(cfg, checkpoint, inference_device(cfg.infer.device))
    vocabulary = categories(benchmark, root)
    text = text_embeddings(model.clip, [c["name"] for c in vocabulary], cfg.clip.text_cache)
    category_ids = [c["id"] for c in vocabulary]
    conditions = [(NETWORK_ORDER, cfg, 0.0)] + [(name, variant, noise) for noise in noise_levels
                                                for name, variant in variants.items()]
    records: list[list[dict]] = [[] for _ in conditions]
    identities = [IdentityRecovery() for _ in conditions]
    handovers = QueryHandovers()
    tracks: dict[int, list[dict]] = {}
    for annotation in gt["annotations"]:
        tracks.setdefault(annotation["video_id"], []).append(annotation)

    for video in tqdm(gt["videos"], desc=f"matching test {benchmark_name}", unit="video"):
        # The same shuffles and noise for every strategy at a noise level: seeded by the video and the level.
        seed = video["id"] * 1009
        matchers = [NetworkOrder() if name == NETWORK_ORDER else
                    ShuffledNoisyMatcher(inference.build_matcher(variant), noise, seed + round(100 * noise))
                    for name, variant, noise in conditions]
        for identity in identities:
            identity.new_video()
        handovers.new_video()
        streams: list = [None] * len(conditions)
        frames = image_file_frames([image_root / name for name in video["file_names"]], video["height"],
                                   video["width"], listed_in=annotation_path)
        start = 0
        try:
            for chunk in inference.frame_chunks(frames, cfg.infer.frames_per_chunk):
                network = inference.network_chunk(model, chunk, text, cfg)
                owners = query_owners(network, tracks.get(video["id"], []), range(start, start + len(chunk)))
                start += len(chunk)
                handovers.add(network.embeddings, owners, network.object_logits.float().softmax(-1)[..., 0])
                for i, (_, variant, _) in enumerate(conditions):
                    aligned = inference.align_chunk(network, matchers[i])
                    if streams[i] is None:
                        streams[i] = inference.StreamingVideo(aligned.mask_logits.shape[1], text.num_classes,
                                                              variant.scoring, aligned.original_size)
                    streams[i].add(aligned)
                    identities[i].add(aligned.perms, owners)
            for i, (_, variant, _) in enumerate(conditions):
                records[i] += streams[i].results(variant.scoring.detections_per_video, video["id"], category_ids)
        finally:
            for stream in streams:
                if stream is not None:
                    stream.close()

    rows = []
    for (name, _, noise), found, identity in zip(conditions, records, identities):
        metrics = evaluate_videos(gt, found, flavour=benchmark.scorer).metrics
        rows.append({"variant": name, "noise": noise, "identity_recovery": identity.rate(), "frames": identity.frames,
                     **{key: metrics[key] for key in METRICS}})
    return {"benchmark": benchmark_name, "noise_levels": list(noise_levels), "rows": rows,
            "handovers": handovers.summary(), "object_shown": OBJECT_SHOWN}


class QueryHandovers:
    """Whether the network's queries keep their objects from frame to frame, and whether their embeddings follow.

    Call `new_video` before each video, then `add` chunk by chunk. A pair is a ground-truth object owned
    (`query_owners`) by a confident query (object probability >= OBJECT_SHOWN, as slot switches count) in
    two adjacent frames; it is kept when the query is the same, a handover otherwise. Cosines of the query
    embeddings: for kept pairs, the query's with itself in the next frame; for handovers, the old owner's with
    the new owner and with the old query in the next frame. A handover is followed when, of the next frame's
    queries, the new owner is the most like the old owner: what adjacent matching needs to move a slot.
    Beside them, `owned_pairs` and `owner_changes` count the same for owners of any confidence: where the
    object goes to or comes from a query the network is not confident in, which slot switches leave out.
    """

    def __init__(self):
        self.kept: list[float] = []
        self.to_new_owner: list[float] = []
        self.to_old_query: list[float] = []
        self.followed = 0
        self.owned_pairs = 0
        self.owner_changes = 0
        self._previous: tuple[dict[int, int], dict[int, int], torch.Tensor] | None = None

    def new_video(self) -> None:
        self._previous = None

    def add(self, embeddings: torch.Tensor, owners: torch.Tensor, object_probs: torch.Tensor) -> None:
        """embeddings (B, Q, D), owners (B, Q) object index or -1, object_probs (B, Q)."""
        for frame, owner, probs in zip(F.normalize(embeddings.float().cpu(), dim=-1), owners.tolist(),
                                       object_probs.tolist()):
            owned = {g: q for q, g in enumerate(owner) if g >= 0}
            held = {g: q for g, q in owned.items() if probs[q] >= OBJECT_SHOWN}
            if self._previous is not None:
                previous_owned, previous_held, previous = self._previous
                both = owned.keys() & previous_owned.keys()
                self.owned_pairs += len(both)
                self.owner_changes += sum(owned[g] != previous_owned[g] for g in both)
                similarity = previous @ frame.T  # (Q, Q): query i of the previous frame, query j of this one
                for g in held.keys() & previous_held.keys():
                    old, new = previous_held[g], held[g]
                    if old == new:
                        self.kept.append(float(similarity[old, old]))
                        continue
                    self.to_new_owner.append(float(similarity[old, new]))
                    self.to_old_query.append(float(similarity[old, old]))
                    self.followed += int(similarity[old].argmax()) == new
            self._previous = owned, held, frame

    def summary(self) -> dict:
        """{"pairs", "handovers", "handover_rate", "followed_rate", "cosine_kept", "cosine_handover_new_owner",
        "cosine_handover_old_query", "owned_pairs", "owner_changes", "owner_change_rate"}: rates and mean cosines
        are None without pairs (handovers) to average."""
        handovers = len(self.to_new_owner)
        pairs = handovers + len(self.kept)
        return {"pairs": pairs, "handovers": handovers, "handover_rate": _ratio(handovers, pairs),
                "followed_rate": _ratio(self.followed, handovers), "cosine_kept": _mean(self.kept),
                "cosine_handover_new_owner": _mean(self.to_new_owner),
                "cosine_handover_old_query": _mean(self.to_old_query), "owned_pairs": self.owned_pairs,
                "owner_changes": self.owner_changes, "owner_change_rate": _ratio(self.owner_changes, self.owned_pairs)}


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class NetworkOrder:
    """No matching: every frame's queries stay in the network's order."""

    def step(self, embeddings: torch.Tensor) -> torch.Tensor:
        return torch.arange(embeddings.shape[0])


class ShuffledNoisyMatcher:
    """Hands a matcher every frame's queries in a random order with noisy embeddings; returns the permutation
    of the frame's own queries (slot j takes query perm[j]), as the matcher's `step` does.

    The noise of a query is Gaussian, scaled so that its norm is about `noise` times the embedding's.
    Shuffles and noise come from a generator seeded with `seed`: matchers with the same seed see the same.
    """

    def __init__(self, matcher, noise: float, seed: int):
        self.matcher, self.noise = matcher, noise
        self.generator = torch.Generator().manual_seed(seed)

    def step(self, embeddings: torch.Tensor) -> torch.Tensor:
        """embeddings (Q, D) -> perm (Q,)."""
        queries, dim = embeddings.shape
        order = torch.randperm(queries, generator=self.generator)
        shuffled = embeddings[order].detach().to("cpu", torch.float32)
        noise = torch.randn(shuffled.shape, generator=self.generator)
        noisy = shuffled + self.noise * shuffled.norm(dim=-1, keepdim=True) / math.sqrt(dim) * noise
        return order[self.matcher.step(noisy)]


def query_owners(network, tracks: list[dict], frames: range) -> torch.Tensor:
    """(B, Q) the index in `tracks` of the ground-truth object each query owns in each frame of the chunk, -1
    for none: the one-to-one assignment of highest total mask IoU at stride 4, pairs of IoU >= OWNER_IOU."""
    from clipvis.data.datasets import decode_masks
    from clipvis.bench.toy import ground_truth_logits, mask_ious

    masks = network.mask_logits > 0  # (B, Q, h, w)
    owners = torch.full(masks.shape[:2], -1, dtype=torch.int64)
    height, width = network.original_size
    for b, t in enumerate(frames):
        present = [g for g, track in enumerate(tracks) if track["segmentations"][t]]
        if not present:
            continue
        truth = decode_masks([tracks[g]["segmentations"][t]["counts"] for g in present], height, width)
        truth = ground_truth_logits(truth, network.image_size, network.padded_size) > 0  # (G, h, w)
        iou = mask_ious(masks[b], truth)  # (Q, G)
        rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
        for q, g in zip(rows, cols):
            if iou[q, g] >= OWNER_IOU:
                owners[b, q] = present[g]
    return owners


class IdentityRecovery:
    """Counts the frames whose track slots keep every ground-truth object where it was first seen.

    Call `new_video` before each video, then `add(perms, owners)` chunk by chunk: perms (B, Q), slot j of
    frame b holds query perms[b, j]; owners (B, Q), the object each query owns (-1: none).
    """

    def __init__(self):
        self.frames = 0  # frames with an owned object that was owned in an earlier frame
        self.right = 0
        self._first_slot: dict[int, int] = {}

    def new_video(self) -> None:
        self._first_slot = {}

    def add(self, perms: torch.Tensor, owners: torch.Tensor) -> None:
        for perm, owner in zip(perms.tolist(), owners.tolist()):
            held = {owner[query]: slot for slot, query in enumerate(perm) if owner[query] >= 0}
            known = {g: slot for g, slot in held.items() if g in self._first_slot}
            if known:
                self.frames += 1
                self.right += all(self._first_slot[g] == slot for g, slot in known.items())
            for g, slot in held.items():
                self._first_slot.setdefault(g, slot)

    def rate(self) -> float | None:
        return self.right / self.frames if self.frames else None
