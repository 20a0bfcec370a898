"""Training the segmenter: class-agnostic masks with object and mask-IoU heads (paper §III-D).

One loop serves image training (LVIS / COCO, `clipvis train`) and single-frame video fine-tuning
(YTVIS, `clipvis finetune --init CKPT`). It reads top to bottom:

    data stream (a pure function of seed and iteration) -> forward -> losses -> clipped AdamW step
    -> every N iterations an atomic checkpoint; `resume` continues from the last one exactly.

CPU runs plain fp32; CUDA runs AMP (bfloat16 autocast). DDP when launched with several processes
(torchrun or SLURM through submitit set RANK / WORLD_SIZE / LOCAL_RANK).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from clipvis.config import Config, load_config, save_config, to_dict, training_settings
from clipvis.data.datasets import build_train_dataset, collate
from clipvis.data.samplers import build_train_sampler
from clipvis.errors import InputError
from clipvis.files import output_lock
from clipvis.layout import CHECKPOINT_FINAL, CHECKPOINT_LAST, CONFIG_FILE
from clipvis.model.checkpoint import check_architecture, load_checkpoint, save_checkpoint
from clipvis.model.clipvis_model import CLIPVIS, pad_target_masks
from clipvis.training.criterion import SetCriterion
from clipvis.training.matcher import HungarianMatcher
from clipvis.tracking import stage_run

log = logging.getLogger(__name__)

IOU_HEAD_SETTINGS = ("iou_head_input", "iou_activation")  # what a head-only training may change of its --init
NO_DECAY_TYPES = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.Embedding)


def train(cfg: Config, out_dir: str | Path, init: str | Path | None = None, resume: bool = True,
          tracking: bool = True, overwrite: bool = False) -> Path:
    """Train until `cfg.train.max_iter`; returns the final checkpoint path.

    `out_dir` is locked while rank 0 writes it. A finished run there made with another config is not
    replaced unless `overwrite`; an unfinished one of another config is started afresh.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world_size, device = _distributed_setup()
    with output_lock(out_dir) if rank == 0 else contextlib.nullcontext():
        _check_finished_run(out_dir, cfg, overwrite)
        return _train(cfg, out_dir, init, resume, tracking, rank, world_size, device)


def _check_finished_run(out_dir: Path, cfg: Config, overwrite: bool) -> None:
    """Refuse to retrain over a finished run of another config, naming what differs (or, with
    `overwrite`, delete its checkpoints so that training starts anew)."""
    final = out_dir / CHECKPOINT_FINAL
    if not final.exists():
        return
    differing = differing_settings(load_checkpoint(final)["config"], cfg)
    if not differing:
        return
    if not overwrite:
        raise InputError(final, "config", f"a finished training with other settings ({', '.join(differing[:4])}"
                                          f"{', ...' if len(differing) > 4 else ''}) is here; pass --overwrite "
                                          "to train anew in this folder, or choose another --out")
    log.warning("%s: replacing a finished training with other settings (%s)", out_dir, ", ".join(differing))
    for name in (CHECKPOINT_FINAL, CHECKPOINT_LAST):
        (out_dir / name).unlink(missing_ok=True)


def _train(cfg: Config, out_dir: Path, init, resume: bool, tracking: bool, rank: int, world_size: int,
           device: torch.device) -> Path:
    torch.manual_seed(cfg.train.seed)

    model = CLIPVIS.from_config(cfg.model, cfg.clip).to(device)
    head_only = cfg.train.trainable == "iou_head"
    if head_only and not init:
        raise InputError("--init", "", "train.trainable iou_head needs --init: the trained model whose masks the "
                                       "new mask-IoU head learns to rank")
    if init:
        initial = load_checkpoint(init)
        check_architecture(initial, cfg, init, ignore=IOU_HEAD_SETTINGS if head_only else ())
        model.load_trainable_state_dict(initial["model"], keep_iou_head=head_only)
        log.info("initialised from %s%s", init, " (all but the mask-IoU head, which alone trains)" if head_only else "")
    if head_only:
        model.freeze_all_but_iou_head()
    criterion = build_criterion(cfg)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)

    start_iter = 0
    last = out_dir / CHECKPOINT_LAST
    state = load_checkpoint(last) if resume and last.exists() else None
    if state is not None and differing_settings(state["config"], cfg):
        log.warning("%s was made with another config: training from the start", last)
        state = None
    if state is not None:
        model.load_trainable_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_iter = state["iteration"]
        log.info("resumed from %s at iteration %d", last, start_iter)
    if rank == 0:
        save_config(cfg, out_dir / CONFIG_FILE)

    dataset = build_train_dataset(cfg.data.train, cfg.data.root, cfg.train)
    sampler = build_train_sampler(dataset, cfg.train, start_iter=start_iter, rank=rank, world_size=world_size)
    loader = torch.utils.data.DataLoader(
        _SampleStream(dataset, sampler), batch_size=cfg.train.batch_size // world_size, collate_fn=collate,
        num_workers=cfg.train.num_workers if device.type == "cuda" else 0)

    trained = model
    if world_size > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()
    tracker = stage_run(cfg, "train", run_name=out_dir.name) if rank == 0 and tracking else contextlib.nullcontext()
    with tracker as mlflow:
        progress = tqdm(total=cfg.train.max_iter, initial=start_iter, desc="train", unit="it", disable=rank != 0)
        started = time.perf_counter()
        losses = None
        for iteration, batch in zip(range(start_iter, cfg.train.max_iter), loader):
            losses = train_step(trained, model, criterion, optimizer, batch, cfg, iteration, device)
            scheduler.step()
            progress.update()
            done = iteration + 1
            if rank == 0 and (done % cfg.train.log_every == 0 or done == cfg.train.max_iter):
                speed = (done - start_iter) / (time.perf_counter() - started)
                progress.set_postfix(loss=f"{losses['total']:.3f}", it_s=f"{speed:.2f}")
                log.debug("iteration %d: %s", done, losses)
                if mlflow:
                    mlflow.log_metrics({**losses, "lr": scheduler.get_last_lr()[0], "it_per_s": speed}, step=done)
            if rank == 0 and done % cfg.train.checkpoint_every == 0 and done < cfg.train.max_iter:
                save_checkpoint(last, model, cfg, done, optimizer, scheduler)
        progress.close()
        if rank == 0 and losses is not None and losses["pred_iou_max"] == 0:
            log.warning("%s: the mask-IoU head predicted 0 for every query of the last batch: a ReLU head "
                        "(model.iou_activation relu) whose output is negative for every input gets no gradient "
                        "again, and every detection of this model scores 0", out_dir)

        final = out_dir / CHECKPOINT_FINAL
        if rank == 0:
            save_checkpoint(last, model, cfg, cfg.train.max_iter, optimizer, scheduler)
            save_checkpoint(final, model, cfg, cfg.train.max_iter)
            if mlflow:
                mlflow.log_artifact(str(out_dir / CONFIG_FILE))
    if world_size > 1:
        dist.barrier()
    return final


def differing_settings(saved: dict, cfg: Config) -> list[str]:
    """The dotted training settings in which a checkpoint's config dict differs from `cfg` (empty: same run).
    A key the saved config lacks (one added to the config since) counts as its default."""
    saved = to_dict(load_config(None, base=saved, base_source="the checkpoint's config"))
    ours, theirs = training_settings(to_dict(cfg)), training_settings(saved)
    differing = []
    for section, value in ours.items():
        if isinstance(value, dict):
            differing += [f"{section}.{key}" for key in value if theirs[section].get(key) != value[key]]
        elif theirs[section] != value:
            differing.append(section)
    return differing


def train_step(trained, model: CLIPVIS, criterion: SetCriterion, optimizer, batch: list[dict], cfg: Config,
               iteration: int, device: torch.device) -> dict[str, float]:
    """One optimiser step; the point sampling is seeded by (seed, iteration) so resumes are exact. Returns the
    losses and `pred_iou_max`, the batch's largest IoU prediction (0 when a ReLU IoU head has died)."""
    images = model.preprocess([sample["image"] for sample in batch])
    height, width = images.shape[-2:]
    targets = [{"masks": pad_target_masks(sample["masks"].to(device), height, width)} for sample in batch]
    generator = torch.Generator(device=device).manual_seed(cfg.train.seed * 1_000_003 + iteration)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.amp and device.type == "cuda"):
        outputs = trained(images, with_aux=True)
    losses = criterion({k: v for k, v in outputs.items() if k != "clip_dense"}, targets, generator)
    total = criterion.total_loss(losses)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.train.grad_clip)
    optimizer.step()
    main = {name: value.item() for name, value in losses.items() if not name[-1].isdigit()}
    return {**main, "total": total.item(), "pred_iou_max": outputs["pred_ious"].detach().max().item()}


def build_criterion(cfg: Config) -> SetCriterion:
    t = cfg.train
    matcher = HungarianMatcher(cost_mask=t.weight_mask, cost_dice=t.weight_dice, cost_object=t.weight_object,
                               num_points=t.num_points)
    return SetCriterion(matcher, weight_object=t.weight_object, weight_iou=t.weight_iou, weight_mask=t.weight_mask,
                        weight_dice=t.weight_dice, no_object_weight=t.no_object_weight, num_points=t.num_points,
                        num_aux_outputs=cfg.model.dec_layers - 1)


def build_optimizer(model: CLIPVIS, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; no weight decay on normalisation layers and embeddings (docs/method.md §6.7)."""
    decay, no_decay = [], []
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            if parameter.requires_grad:
                (no_decay if isinstance(module, NO_DECAY_TYPES) else decay).append(parameter)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr)


def build_scheduler(optimizer, cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    """Step decay: ×gamma at each of `lr_steps`. (The reference's warmup has factor 1.0: a no-op.)"""
    steps, gamma = cfg.train.lr_steps, cfg.train.lr_gamma
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: gamma ** sum(it >= step for step in steps))


class _SampleStream(torch.utils.data.IterableDataset):
    """The dataset read in sampler order: each sample a pure function of (index, sample seed)."""

    def __init__(self, dataset, sampler):
        self.dataset, self.sampler = dataset, sampler

    def __iter__(self):
        for index, sample_seed in self.sampler:
            yield self.dataset.get(index, sample_seed)


def _distributed_setup() -> tuple[int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device
