"""DDP training on CPU: two gloo ranks in one machine, as torchrun or SLURM would start them."""

import socket

import pytest
import torch
import torch.multiprocessing as mp

from ddp_worker import train_rank

from clipvis.model.clipvis_model import CLIPVIS
from clipvis.model.checkpoint import load_checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.system
def test_two_ranks_stay_in_step_and_only_rank_zero_writes(tiny_config, tmp_path):
    tiny_config.train.batch_size = 2  # in all: one image on each rank
    tiny_config.train.max_iter = 3
    tiny_config.train.checkpoint_every = 2
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(train_rank, args=(2, free_port(), tiny_config, out), nprocs=2)

    saved = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [s["batch_sizes"] for s in saved] == [[1, 1, 1], [1, 1, 1]]
    rank0, rank1 = (s["model"] for s in saved)
    # The ranks saw different images; identical weights mean every step averaged both ranks' gradients.
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    final = load_checkpoint(out / "model_final.pt")
    assert final["iteration"] == 3 and all(torch.equal(final["model"][name], rank0[name]) for name in rank0)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint_last.pt", "config.yaml", "model_final.pt",
                                                     "rank0.pt", "rank1.pt"]
    # And they trained: the learnable queries moved from where a fresh model of the same seed starts.
    torch.manual_seed(tiny_config.train.seed)
    start = CLIPVIS.from_config(tiny_config.model, tiny_config.clip).trainable_state_dict()
    queries = [name for name in start if name.endswith("query_feat.weight")]
    assert queries and not any(torch.equal(start[name], rank0[name]) for name in queries)
