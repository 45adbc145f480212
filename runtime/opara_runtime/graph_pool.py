"""A CUDA graph memory pool that several captures share, with the streams they must share to reuse its blocks."""
from __future__ import annotations

import torch


class GraphPool:
    """One private pool for the captures of several plans that never replay at the same time (the buckets of a
    plan set): a later capture reuses the blocks an earlier one freed, so the graphs together hold about what
    the largest holds alone, plus what each keeps between replays (its outputs).

    The caching allocator hands a freed block only to an allocation on the stream that freed it, so the captures
    also share their streams: plan stream k of every capture on a device is one stream (stream 0, the capture
    stream, included). Captures must be serialised, and so must replays: they write the same memory.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.handle = torch.cuda.graph_pool_handle()
        self.streams: dict[tuple[str, int], torch.cuda.Stream] = {}

    def stream(self, device: torch.device, k: int) -> torch.cuda.Stream:
        """The stream every capture of this pool runs its plan stream k of `device` on."""
        key = (str(device), k)
        if key not in self.streams:
            self.streams[key] = torch.cuda.Stream(device=device)
        return self.streams[key]

    def reserved_bytes(self) -> int:
        """The device memory the pool holds now (its segments, used or cached for the next capture)."""
        pool = tuple(self.handle)
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        return sum(seg["total_size"] for seg in torch.cuda.memory_snapshot()
                   if seg.get("device") == index and tuple(seg.get("segment_pool_id", ())) == pool)
