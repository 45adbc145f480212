"""Figures of the GPU a plan targets (peak FLOP/s, memory bandwidth, SM count and per-SM limits), from its Target."""
from __future__ import annotations

from dataclasses import dataclass

from opara_plan import Target


@dataclass(frozen=True)
class GpuSpec:
    """Nominal dense peaks and per-SM limits. Only ratios are used: the ridge point that tells compute- from
    memory-bound ops, and kernel demands on a common 0..1 scale of one SM (or of the whole GPU)."""

    name: str
    fp32_flops: float
    half_flops: float       # float16 and bfloat16 (tensor cores, dense)
    bytes_per_s: float
    sm_count: int
    sm_threads: int = 2048
    sm_registers: int = 65536
    sm_shared_memory: int = 228 * 1024

    def flops(self, dtype: str) -> float:
        return self.half_flops if dtype in ("float16", "bfloat16") else self.fp32_flops

    def ridge(self, dtype: str = "float32") -> float:
        """FLOPs per byte above which an op is compute-bound."""
        return self.flops(dtype) / self.bytes_per_s


# Hopper (H100 SXM): the default for a GPU not in the table, as the profiler assumed before the table existed.
HOPPER = GpuSpec("H100", fp32_flops=67e12, half_flops=990e12, bytes_per_s=3.35e12, sm_count=132)
# What a cost-model (CPU preview) plan is computed with: nominal H100-class figures, one peak for every dtype.
# Preview plans' relative costs, and so their schedules, depend on these; keep them as they are.
PREVIEW = GpuSpec("nominal H100-class (cost model)", fp32_flops=60e12, half_flops=60e12, bytes_per_s=3.0e12,
                  sm_count=132)

# Per-SM limits by compute capability: (threads, 32-bit registers, shared memory bytes).
SM_LIMITS = {(7, 0): (2048, 65536, 96 << 10), (7, 5): (1024, 65536, 64 << 10), (8, 0): (2048, 65536, 164 << 10),
             (8, 6): (1536, 65536, 100 << 10), (8, 7): (1536, 65536, 164 << 10), (8, 9): (1536, 65536, 100 << 10),
             (9, 0): (2048, 65536, 228 << 10)}

# Datasheet peaks (dense) by a substring of the device name, most specific first ('A100' before 'A10',
# 'L40' before 'L4'): (fp32 FLOP/s, fp16/bf16 FLOP/s, bytes/s, SM count when the Target does not say).
KNOWN_GPUS = (
    ("H200", 67e12, 990e12, 4.8e12, 132),
    ("H100 PCIe", 51e12, 756e12, 2.0e12, 114),
    ("H100", 67e12, 990e12, 3.35e12, 132),
    ("A100-SXM4-40GB", 19.5e12, 312e12, 1.555e12, 108),
    ("A100-PCIE-40GB", 19.5e12, 312e12, 1.555e12, 108),
    ("A100", 19.5e12, 312e12, 2.039e12, 108),
    ("L40S", 91.6e12, 362e12, 0.864e12, 142),
    ("L40", 90.5e12, 181e12, 0.864e12, 142),
    ("L4", 30.3e12, 121e12, 0.3e12, 58),
    ("A10G", 31.2e12, 125e12, 0.6e12, 80),
    ("A10", 31.2e12, 125e12, 0.6e12, 72),
    ("T4", 8.1e12, 65e12, 0.32e12, 40),
    ("V100", 15.7e12, 125e12, 0.9e12, 80),
)
# A GPU whose name is not listed takes the figures of its architecture's flagship.
BY_ARCHITECTURE = {(7, 0): "V100", (7, 5): "T4", (8, 0): "A100", (8, 6): "A10", (8, 9): "L40S", (9, 0): "H100"}


def gpu_spec(target: Target) -> GpuSpec:
    """The figures for a plan's Target: PREVIEW for a cost-model (CPU) plan; for a GPU the table's row by name,
    else by compute capability, else Hopper's; the SM count and per-SM limits the Target implies win."""
    if target.device_type != "cuda":
        return PREVIEW
    row = _row_by_name(target.gpu_name) or _row_by_name(BY_ARCHITECTURE.get(tuple(target.compute_capability[:2]), ""))
    cc = tuple(target.compute_capability[:2])
    threads, registers, shared = SM_LIMITS.get(cc, (HOPPER.sm_threads, HOPPER.sm_registers, HOPPER.sm_shared_memory))
    if row is None:
        name, fp32, half, bandwidth, sms = HOPPER.name, HOPPER.fp32_flops, HOPPER.half_flops, HOPPER.bytes_per_s, \
            HOPPER.sm_count
    else:
        name, fp32, half, bandwidth, sms = row
    return GpuSpec(target.gpu_name or name, fp32_flops=fp32, half_flops=half, bytes_per_s=bandwidth,
                   sm_count=target.sm_count or sms, sm_threads=threads, sm_registers=registers,
                   sm_shared_memory=shared)


def _row_by_name(name: str):
    if not name:
        return None
    return next((row for row in KNOWN_GPUS if row[0].lower() in name.lower()), None)
