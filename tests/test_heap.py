"""glibc heap settings for CPU inference: the buffers of a repeated forward pass are reused without
faulting their pages in again."""

import resource

import pytest
import torch

from clipvis.heap import keep_freed_memory, release_free_memory

PAGES = 6300 * 2048 * 4 // 4096  # the hidden layer's buffer below (51 MB), in 4 KB pages


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def faults_per_pass(passes: int) -> list[int]:
    """Minor page faults of each of `passes` forward passes of a pixel-decoder-sized feed-forward layer."""
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(256, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 256))
    tokens = torch.randn(6300, 256)
    faults = []
    with torch.inference_mode():
        for _ in range(passes):
            before = minor_faults()
            layer(tokens)
            faults.append(minor_faults() - before)
    return faults


@pytest.fixture
def glibc_heap():
    if not keep_freed_memory():
        pytest.skip("not glibc: the heap settings do not apply")


def test_repeated_passes_reuse_freed_buffers_without_page_faults(glibc_heap):
    *_, settled = faults_per_pass(12)
    assert settled < PAGES // 20  # glibc's default maps and unmaps the buffer every pass: ~PAGES faults


def test_released_memory_faults_in_again(glibc_heap):
    faults_per_pass(12)
    release_free_memory()
    assert faults_per_pass(1)[0] > PAGES // 2
