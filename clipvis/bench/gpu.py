"""`clipvis bench gpu` (run by scripts/gpu_check.sh): what has to be seen on a GPU once, in one JSON.

Parts, each recorded with its result or its error (one failing part does not stop the others):

- environment: torch, CUDA, the device, its bfloat16 support;
- cpu_reference: a random-weight RN50 model (paper size) segments a synthetic 480×640 video on CPU;
- amp_training: optimiser steps of that model under CUDA bfloat16 autocast (`train_step`, the paper's
  1024×1024 training crops): loss finite, seconds per step, peak GPU memory;
- ddp: `train_step` under DistributedDataParallel with 2 processes on this GPU, through the project's
  setup (NCCL); where NCCL refuses two ranks on one device, the same with gloo, and NCCL with 1 process;
  after 3 steps on different images the ranks' weights must be identical;
- inference: `clipvis bench infer` on CUDA: frames/s of RN50 and ConvNeXt-B streaming inference at
  480×640 with 1,196 classes, fp32 and bf16 (the paper: 31.4 and 21.0 frames/s on an A100), peak memory;
- cpu_vs_gpu: the CPU reference's video segmented on the GPU (fp32, TF32 off): detections kept and
  score differences, and the largest logit differences on one frame.

Without a CUDA device the CPU parts run and the check ends with "no CUDA device". The JSON is rewritten
after every part, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import socket
import time
import traceback
from typing import Callable

import torch

from clipvis.config import load_config

log = logging.getLogger(__name__)

PAPER_R50 = ["clip.model=RN50", "clip.pretrained=null"]
DDP_STEPS = 3
DDP_TIMEOUT_S = 240


def run(args) -> dict:
    report: dict = {"status": "running"}

    def part(name: str, fn: Callable[[], dict]) -> None:
        log.info("gpu check: %s", name)
        start = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as error:  # recorded, and the check goes on with the next part
            log.error("gpu check: %s failed\n%s", name, traceback.format_exc())
            report[name] = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"}
        report[name]["seconds"] = round(time.perf_counter() - start, 1)
        if args.out:
            from clipvis.files import write_json

            write_json(args.out, report, indent=2)

    part("environment", environment)
    reference = {}
    part("cpu_reference", lambda: cpu_reference(reference, args.frames, args.height, args.width, args.seed))
    if not torch.cuda.is_available():
        report["status"] = "no CUDA device"
        print("no CUDA device: the CPU parts ran, the GPU parts did not")
        return report
    device = torch.device("cuda")
    part("amp_training", lambda: amp_training(device, args.steps, args.train_batch, args.train_size, args.seed))
    part("ddp", lambda: ddp_check(args.seed))
    part("inference", lambda: inference_speed(args.fps_frames, args.seed))
    part("cpu_vs_gpu", lambda: cpu_vs_gpu(reference, device))
    report["status"] = "done"
    return report


def environment() -> dict:
    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, devices=torch.cuda.device_count(), device=torch.cuda.get_device_name(0),
                    capability=list(torch.cuda.get_device_capability(0)), bf16=torch.cuda.is_bf16_supported(),
                    memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), nccl=_nccl_version())
    return info


def _nccl_version() -> str | None:
    if not torch.distributed.is_nccl_available():
        return None
    version = torch.cuda.nccl.version()
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def cpu_reference(reference: dict, frames: int, height: int, width: int, seed: int) -> dict:
    """Build the random-weight RN50 model and segment a synthetic video on CPU; kept in `reference`."""
    from clipvis.bench.model import LVVIS_CLASSES, forward_and_classify
    from clipvis.bench.inference import random_vocabulary, random_weight_model, synthetic_frames
    from clipvis.video.inference import segment_video

    cfg = load_config("params/paper/base.yaml", PAPER_R50 + ["infer.device=cpu", f"infer.min_size={height}"])
    model, model_seed = random_weight_model(cfg, torch.device("cpu"), seed, height, width)
    text = random_vocabulary(model.clip.embed_dim, LVVIS_CLASSES, seed)
    video = list(synthetic_frames(frames, height, width, seed))
    start = time.perf_counter()
    records = segment_video(model, iter(video), text, cfg)
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        outputs = forward_and_classify(model, model.preprocess(video[:1]), text)
    reference.update(model=model, cfg=cfg, text=text, video=video, records=records, outputs=outputs)
    return {"frames": frames, "frame_size": [height, width], "model_seed": model_seed, "detections": len(records),
            "seconds_per_frame": round(seconds / frames, 3)}


def amp_training(device: torch.device, steps: int, batch_size: int, size: int, seed: int) -> dict:
    """`train_step` of the paper-size RN50 model, random images and masks; on CUDA under bfloat16
    autocast (`train.amp`; CPU trains in float32)."""
    from clipvis.model.clipvis_model import CLIPVIS
    from clipvis.training.loop import build_criterion, build_optimizer, train_step

    cfg = load_config("params/paper/base.yaml", PAPER_R50)
    torch.manual_seed(seed)
    model = CLIPVIS.from_config(cfg.model, cfg.clip).to(device).train()
    criterion, optimizer = build_criterion(cfg), build_optimizer(model, cfg)
    batch = synthetic_training_batch(batch_size, size, seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, seconds = [], []
    for iteration in range(steps):
        start = _now(device)
        losses.append(train_step(model, model, criterion, optimizer, batch, cfg, iteration, device)["total"])
        seconds.append(_now(device) - start)
    timed = seconds[2:] or seconds
    return {"device": str(device), "autocast": "bfloat16" if cfg.train.amp and device.type == "cuda" else None,
            "batch": batch_size, "image_size": size,
            "steps": steps, "losses": [round(loss, 4) for loss in losses],
            "loss_finite": all(map(_finite, losses)),
            "seconds_per_step": round(min(timed), 4), "peak_memory_gb": _peak_gb(device)}


def synthetic_training_batch(batch_size: int, size: int, seed: int, objects: int = 4) -> list[dict]:
    """Random images with a few random rectangles as instance masks."""
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        masks = torch.zeros(objects, size, size, dtype=torch.bool)
        for mask in masks:
            top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
            height, width = torch.randint(size // 16, size // 2, (2,), generator=generator).tolist()
            mask[top:top + height, left:left + width] = True
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)
        batch.append({"image": image, "masks": masks})
    return batch


def ddp_check(seed: int) -> dict:
    """2 processes on GPU 0 (or one per GPU, given two): NCCL through the project's setup; where that
    fails, gloo with 2 processes and NCCL with 1."""
    two_gpus = torch.cuda.device_count() >= 2
    result = {"nccl_2_processes": _ddp_run(2, "nccl", two_gpus, seed)}
    if "error" in result["nccl_2_processes"]:
        result["gloo_2_processes"] = _ddp_run(2, "gloo", two_gpus, seed)
        result["nccl_1_process"] = _ddp_run(1, "nccl", two_gpus, seed)
    return result


def _ddp_run(world_size: int, backend: str, one_gpu_each: bool, seed: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    workers = [context.Process(target=ddp_worker, args=(rank, world_size, backend, one_gpu_each, port, seed, queue))
               for rank in range(world_size)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + DDP_TIMEOUT_S
    results = []
    while len(results) < world_size and time.monotonic() < deadline and any(w.is_alive() for w in workers):
        try:
            results.append(queue.get(timeout=5))
        except Exception:  # queue.Empty: keep waiting while workers live
            continue
    for worker in workers:
        worker.join(timeout=10)
        if worker.is_alive():
            worker.terminate()
    if len(results) < world_size:
        errors = [r["error"] for r in results if "error" in r]
        return {"error": errors[0] if errors else f"{world_size - len(results)} rank(s) gave no result in time"}
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    results.sort(key=lambda r: r["rank"])
    return {"world_size": world_size, "backend": backend, "devices": [r["device"] for r in results],
            "losses_finite": all(r["losses_finite"] for r in results),
            "weights_identical": len({r["checksum"] for r in results}) == 1,
            "seconds_per_step": max(r["seconds_per_step"] for r in results)}


def ddp_worker(rank: int, world_size: int, backend: str, one_gpu_each: bool, port: int, seed: int, queue) -> None:
    """One rank: the toy model under DistributedDataParallel for DDP_STEPS `train_step`s on its own images
    (CUDA when present, else CPU)."""
    import torch.distributed as dist

    from clipvis.model.clipvis_model import CLIPVIS
    from clipvis.training.loop import _distributed_setup, build_criterion, build_optimizer, train_step

    try:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank if one_gpu_each else 0),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if backend != "nccl":
            dist.init_process_group(backend, rank=rank, world_size=world_size)
        _, _, device = _distributed_setup()
        if world_size == 1 and not dist.is_initialized():
            dist.init_process_group(backend, rank=0, world_size=1)
        cfg = load_config("params/toy/default.yaml", ["clip.pretrained=null"])
        torch.manual_seed(seed)
        model = CLIPVIS.from_config(cfg.model, cfg.clip).to(device).train()
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        criterion, optimizer = build_criterion(cfg), build_optimizer(model, cfg)
        batch = synthetic_training_batch(1, 128, seed + 1 + rank)
        losses, start = [], _now(device)
        for iteration in range(DDP_STEPS):
            losses.append(train_step(trained, model, criterion, optimizer, batch, cfg, iteration, device)["total"])
        seconds = (_now(device) - start) / DDP_STEPS
        checksum = sum(float(p.double().sum()) for p in model.parameters() if p.requires_grad)
        queue.put({"rank": rank, "device": str(device), "losses_finite": all(map(_finite, losses)),
                   "checksum": round(checksum, 9), "seconds_per_step": round(seconds, 4)})
        dist.destroy_process_group()
    except Exception as error:
        queue.put({"rank": rank, "error": f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"})


def inference_speed(frames: int, seed: int) -> dict:
    from clipvis.bench.inference import bench_infer

    torch.cuda.reset_peak_memory_stats()
    result = bench_infer(frames=frames, devices=("cuda",), repeats=2, seed=seed)
    result["peak_memory_gb"] = _peak_gb(torch.device("cuda"))
    result["paper_fps_a100"] = {"RN50": 31.4, "convnext_base_w_320": 21.0}
    return result


def cpu_vs_gpu(reference: dict, device: torch.device) -> dict:
    """The CPU reference's model, video and vocabulary on the GPU (fp32, TF32 off)."""
    from clipvis.bench.model import forward_and_classify, output_change
    from clipvis.bench.inference import compare_detections
    from clipvis.video.inference import segment_video

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = copy.deepcopy(reference["model"]).to(device)
    cfg = copy.deepcopy(reference["cfg"])
    cfg.infer.device = "cuda"
    records = segment_video(model, iter(reference["video"]), reference["text"], cfg)
    with torch.inference_mode():
        outputs = forward_and_classify(model, model.preprocess(reference["video"][:1]), reference["text"])
    outputs = {key: value.cpu() for key, value in outputs.items() if torch.is_tensor(value)}
    return {"tf32": False, "detections": compare_detections(reference["records"], records),
            "one_frame": output_change(reference["outputs"], outputs)}


def _peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
