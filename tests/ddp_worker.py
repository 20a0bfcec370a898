"""What each process of tests/test_ddp.py runs: the toy training as one rank of a CPU (gloo) DDP group."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clipvis.config import Config
import clipvis.training.loop
from clipvis.model.clipvis_model import CLIPVIS


def train_rank(rank: int, world_size: int, port: int, cfg: Config, out_dir: Path) -> None:
    """`train` as rank `rank`, then this rank's trained weights and batch sizes to out_dir/rank<rank>.pt."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    built = []
    build = CLIPVIS.from_config

    def keep(model_cfg, clip_cfg):
        built.append(build(model_cfg, clip_cfg))
        return built[-1]

    batch_sizes = []
    step = clipvis.training.loop.train_step

    def count(trained, model, criterion, optimizer, batch, *args):
        batch_sizes.append(len(batch))
        return step(trained, model, criterion, optimizer, batch, *args)

    CLIPVIS.from_config = keep  # this process only: a spawned child of the test
    clipvis.training.loop.train_step = count
    clipvis.training.loop.train(cfg, out_dir, tracking=False)
    torch.save({"model": built[0].trainable_state_dict(), "batch_sizes": batch_sizes}, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()
