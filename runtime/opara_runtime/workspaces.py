"""cuBLAS workspaces owned by the CUDA graph that captured them.

PyTorch keeps one cuBLAS (and cuBLASLt) workspace per handle and stream for the life of the process, in a map any
caller can clear: torch.compile's mode="reduce-overhead" clears it every time it records a graph
(torch._inductor.cudagraph_trees.clear_cublass_cache). A graph bakes in the address of each workspace its matmuls
used. Where that workspace was allocated outside the graph's private pool (by the warm-up, which runs each stream
eagerly before the capture), clearing the map hands its memory back to the caching allocator, which gives it to
other tensors or releases it to the driver (empty_cache, which every capture calls), and the graph's next replay
overwrites those tensors or faults with an illegal memory access. That can happen in any process that also runs
torch.compile, and is the likeliest cause of the illegal memory access that twice killed a Swin-T benchmark group
on the H200, where torch.compile recompiled and recorded again behind a plan with 21 streams (docs/design.md,
section 7; not yet confirmed on a GPU).

Cleared right before the capture, every stream's workspace is allocated during it, from the graph's own pool, which
lives as long as the graph; cleared right after, the map lets go of them, so no eager matmul on the same streams
later shares one with the graph's replays. torch.compile's graphs do the same.
"""
from __future__ import annotations

import contextlib

import torch


def clear_cublas_workspaces() -> None:
    """Drop every cached cuBLAS workspace (each is allocated again on its stream's next matmul)."""
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:  # a build without CUDA has nothing to clear
        clear()


@contextlib.contextmanager
def graph_owned_workspaces():
    """Around a CUDA graph capture: the workspaces its matmuls use come from the graph's pool and stay with it."""
    clear_cublas_workspaces()
    try:
        yield
    finally:
        clear_cublas_workspaces()
