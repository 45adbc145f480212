"""CompileOptions: every option of compile(), the values each may take (declared here, once) and their checks."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from opara_plan import MEMORY_FORMATS as PLAN_MEMORY_FORMATS
from opara_plan import Link, ModelError
from opara_plan.validate import MAX_STREAMS

# The lists below are the compiler's vocabulary: click's choices, the Python API's checks and the passes that
# dispatch on a name all read them from here. (opara_plan.validate keeps its own list of what a plan may record.)
STREAM_ALGORITHMS = ("opara", "nimble", "critical", "window", "single")
ORDER_ALGORITHMS = ("topo", "opara", "critical")
DTYPES = ("float32", "float16", "bfloat16")
FUSE_BACKENDS = ("inductor",)
# How a fused plan's schedule becomes segments: as it is, or after moving small side branches onto a neighbour.
CUTS = ("maximal", "coarse")
# What a fused plan puts on streams: 'segments' (inductor fuses inside each stream segment), 'kernels' (inductor
# fuses the whole graph, Opara puts its kernels on streams), 'auto' (the guard or the tuner picks by measuring).
FUSE_MODES = ("auto", "segments", "kernels")
# What compile() takes; a plan records a resolved one (PLAN_MEMORY_FORMATS).
MEMORY_FORMATS = ("auto",) + PLAN_MEMORY_FORMATS
ATTENTION_MODES = ("sdpa", "math")
DEVICE_KINDS = ("cpu", "cuda")
# 0 means no cap; a plan holds at most MAX_STREAMS streams, so a larger cap could never bind.
MAX_STREAMS_RANGE = (0, MAX_STREAMS)

_DEVICE = re.compile(r"(cpu|cuda)(:\d+)?")
_GPU = re.compile(r"cuda:\d+")


def parse_device(device) -> str | None:
    """'cpu', 'cuda' or 'cuda:N' (a str or a torch.device) -> its name; None stays None (pick at compile time)."""
    if device is None:
        return None
    text = str(device)  # a torch.device prints as 'cuda:0'
    if not _DEVICE.fullmatch(text):
        raise ModelError(f"device {text!r}: expected 'cpu' or 'cuda[:N]'")
    return text


def parse_devices(devices) -> tuple[str, ...]:
    """['cuda:0', 'cuda:1'] (or 'cuda:0,cuda:1') -> distinct CUDA device names, in the plan's device order."""
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    names = tuple(str(d) for d in devices)
    for d in names:
        if not _GPU.fullmatch(d):
            raise ModelError(f"devices: expected GPUs written cuda:N, found {d!r}")
    if len(set(names)) != len(names):
        raise ModelError(f"devices: each GPU may appear once, found {', '.join(names)}")
    if not names:
        raise ModelError("devices: expected at least one GPU, found none")
    return names


@dataclass(frozen=True)
class CompileOptions:
    """How to compile a model. Built from compile()'s keywords or given whole; checked as it is made.

    streams/order: the stream-assignment and launch-order algorithms; max_streams caps the streams (0: no cap).
    dtype: the plan's precision. device: 'cpu' (a cost-model preview plan), 'cuda[:N]', or None for the GPU when
    one is present. tune: measure candidate schedules on the GPU. shapes: fixes an .onnx model's symbolic input
    dimensions ('x:1x3x224x224,ids:1x128:int64' or {'x': (1, 3, 224, 224), 'ids': ((1, 128), 'int64')}).
    fuse: '' or a backend that compiles each stream segment. cut: how a fused schedule becomes segments.
    fuse_mode: 'segments', 'kernels' (the whole graph fused, its kernels on streams) or 'auto' (the kernel-level
    plan, and segments where the profile says they could clearly beat it: the guard, or the tuner, keeps the
    faster).
    devices: several GPUs (cuda:N) to map the ops onto; links: their copy costs for a preview plan.
    attention: SDPA as one kernel or as matrix products. memory_format: the layout of 4-D weights and inputs.
    guard: on a GPU, measure an untuned plan against one stream before it is written and keep the faster
    (oparac.search.guard); a tuned plan always has the single-stream schedule among its candidates.
    merge_projections: linears that read the same activation as one GEMM over their weights, stacked at load
    (PyTorch models; ingest/merge_projections.py). On by default, since it measured faster on the H200
    (docs/design.md section 2); False compiles every linear as it is. merge_convolutions: convolutions that read
    the same activation with the same kernel size, stride, padding and dilation (an Inception block's 1x1 convs)
    likewise, one convolution over their stacked weights; on by default, since GoogLeNet and Inception-v3 measured
    faster with it on the H200 (docs/design.md section 2).
    """

    streams: str = "opara"
    order: str = "opara"
    max_streams: int = 0
    dtype: str = "float32"
    device: str | None = None
    tune: bool = False
    shapes: str | dict | None = field(default=None, hash=False)
    fuse: str = ""
    cut: str = "maximal"
    fuse_mode: str = "auto"
    devices: tuple[str, ...] | None = None
    links: tuple[Link, ...] | None = None
    attention: str = "sdpa"
    memory_format: str = "auto"
    guard: bool = True
    merge_projections: bool = True
    merge_convolutions: bool = True

    def __post_init__(self) -> None:
        _choice("streams", self.streams, STREAM_ALGORITHMS)
        _choice("order", self.order, ORDER_ALGORITHMS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("cut", self.cut, CUTS)
        _choice("fuse_mode", self.fuse_mode, FUSE_MODES)
        _choice("attention", self.attention, ATTENTION_MODES)
        _choice("memory_format", self.memory_format, MEMORY_FORMATS)
        low, high = MAX_STREAMS_RANGE
        if type(self.max_streams) is not int or not low <= self.max_streams <= high:
            raise ModelError(f"max_streams: expected an int in {low}..{high} (0: no cap), found {self.max_streams!r}")
        for flag in ("tune", "guard", "merge_projections", "merge_convolutions"):
            if not isinstance(getattr(self, flag), bool):
                raise ModelError(f"{flag}: expected True or False, found {getattr(self, flag)!r}")
        # None (the CLI's unset --fuse) means no fusion, as '' does.
        object.__setattr__(self, "fuse", self.fuse or "")
        if self.fuse:
            _choice("fuse", self.fuse, FUSE_BACKENDS)
        object.__setattr__(self, "device", parse_device(self.device))
        if self.devices is not None:
            object.__setattr__(self, "devices", parse_devices(self.devices))
        if self.links is not None:
            links = tuple(self.links)
            if not all(isinstance(link, Link) for link in links):
                raise ModelError(f"links: expected opara_plan.Link records, found "
                                 f"{', '.join(sorted({type(x).__name__ for x in links}))}")
            object.__setattr__(self, "links", links)
        if self.shapes is not None and not isinstance(self.shapes, (str, dict)):
            raise ModelError(f"shapes: expected a string like 'x:1x3x224x224' or a dict like "
                             f"{{'x': (1, 3, 224, 224)}}, found {type(self.shapes).__name__}")
        if self.cut != "maximal" and not self.fuse:
            raise ModelError(f"cut {self.cut!r}: applies to fused plans only; add fuse='inductor' (--fuse inductor)")
        if self.fuse_mode != "auto" and not self.fuse:
            raise ModelError(f"fuse_mode {self.fuse_mode!r}: applies to fused plans only; add fuse='inductor' "
                             f"(--fuse inductor)")
        if self.fuse_mode == "kernels" and self.cut != "maximal":
            raise ModelError("cut: a plan of fuse_mode 'kernels' has one segment, the whole graph; leave cut at "
                             "'maximal'")
        if self.fuse and self.devices is not None and len(self.devices) > 1:
            raise ModelError("fuse: fused plans run on one GPU; compile with one device or without --fuse")

    @property
    def merged_kinds(self) -> tuple[str, ...]:
        """The kinds of sibling op the ingest merges (ingest/merge_projections.MERGEABLE)."""
        return ("linear",) * self.merge_projections + ("convolution",) * self.merge_convolutions

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_keywords(cls, options: CompileOptions | None = None, **keywords) -> CompileOptions:
        """`options` (or the defaults) with `keywords` replacing fields; an unknown keyword is a ModelError."""
        unknown = sorted(set(keywords) - set(cls.names()))
        if unknown:
            raise ModelError(f"compile(): unknown option{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; valid options: {', '.join(cls.names())}")
        if options is None:
            return cls(**keywords)
        if not isinstance(options, cls):
            raise ModelError(f"options: expected a CompileOptions, found {type(options).__name__}")
        return dataclasses.replace(options, **keywords) if keywords else options


def _choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ModelError(f"{name}: expected one of {allowed}, found {value!r}")
