"""The plan: frozen dataclasses of plain data (ints, strings, floats, tuples) shared by compiler and runtime."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

# 1.1 added Segment.artifact (fused plans), Profile.links/links_method, Schedule.device_algorithm and
# Candidate.num_devices (several GPUs). 1.2 stores each distinct compiled segment once (Fusion.programs,
# Segment.program) instead of Segment.artifact: repeated cells compile to the same code. A 1.1 plan still
# loads; its segments are compiled at load. 1.2 also adds ModelInfo.memory_format (written only when it is not
# the default 'contiguous', so default plans keep their bytes; a reader without it ignores the key).
# 1.3 adds Plan.signature (Ed25519 signatures over plan_digest, written only when the plan is signed): a 1.2
# reader ignores the key and sees an unsigned plan, and an unsigned 1.3 plan differs from 1.2 only in its version.
# 1.4 adds Fusion.mode and Fusion.kernels (the kernel-level fused mode), written only for such a plan: older plans
# load unchanged, and a 1.3 reader ignores both keys and runs the plan's one segment as compiled, on one stream
# (correct, only without the kernel streams).
# 1.5 adds stacked params (CONCAT_PARAM). 1.6 adds KernelStreams.priority, written only where a stream is raised:
# a 1.5 reader ignores it and runs the schedule with every stream at normal priority (correct, only unprioritised).
SCHEMA_VERSION: tuple[int, int] = (1, 6)
FORMAT = "opara-plan"
NODE_KINDS = ("input", "param", "constant", "op", "output")
# A param node of this target stacks the weights its args name (schema 1.5; oparac's merged projections).
CONCAT_PARAM = "concat"
MAX_CONCAT_PARTS = 64
# How the runtime lays out 4-D floating-point weights and inputs: NCHW as given, or NHWC (channels_last).
MEMORY_FORMATS = ("contiguous", "channels_last")
# Field metadata: the codec writes the field only when its value differs from the default.
OMIT_DEFAULT = {"omit_default": True}
# Records are slotted: a plan of a million nodes holds millions of them, and a __dict__ each would be most of it.


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to output `index` of graph node `node` (an argument of another node)."""

    node: int
    index: int = 0


@dataclass(frozen=True, slots=True)
class Sym:
    """A literal that is not plain data: kind is 'dtype', 'device', 'layout' or 'memory_format'."""

    kind: str
    value: str


# An argument tree: plain literals, references to node outputs, symbols, and tuples of those.
Arg = Union[None, bool, int, float, str, Ref, Sym, tuple]


@dataclass(frozen=True, slots=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class Node:
    """One graph node. Its id is its index in Graph.nodes, which is a topological order.

    kind 'input' and 'param' name a model input or a weight (state-dict key / ONNX initializer);
    'constant' carries its bytes in `data`; 'op' calls the ATen overload `target`; the single
    'output' node lists the flat model outputs in `args`. A param with target CONCAT_PARAM (1.5) is the
    weights its `args` name, concatenated along dimension 0 when the plan is loaded (merged projections).
    """

    kind: str
    name: str
    target: str = ""
    args: tuple[Arg, ...] = ()
    kwargs: tuple[tuple[str, Arg], ...] = ()
    outputs: tuple[TensorMeta, ...] = ()
    multi: bool = False  # the op returns a sequence; Refs index into it
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class OutTree:
    """How the flat outputs are put back into the model's own structure.

    kind: 'tensor' (flat output `index`), 'tuple', 'list', 'dict' (with `keys`), 'none'.
    """

    kind: str
    index: int = 0
    keys: tuple[str, ...] = ()
    children: tuple[OutTree, ...] = ()


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    version: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    source: str  # 'torch.export', 'fx' or 'onnx'
    fingerprint: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    output_tree: OutTree
    precision: str
    # Applied at load like precision: 'channels_last' binds 4-D floating-point weights and static inputs in
    # NHWC; outputs come back contiguous.
    memory_format: str = field(default="contiguous", metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True)
class Target:
    """The machine the profile was taken on. device_type 'cpu' means a cost-model preview plan."""

    device_type: str
    gpu_name: str = ""
    compute_capability: tuple[int, ...] = ()
    sm_count: int = 0
    device_count: int = 1
    driver: str = ""
    cuda: str = ""
    torch: str = ""


@dataclass(frozen=True, slots=True)
class Schedule:
    """Where and when every op runs. Per-node tables are indexed by node id (-1 for non-ops)."""

    stream_algorithm: str
    order_algorithm: str
    max_streams: int
    num_streams: int
    stream: tuple[int, ...]
    launch_order: tuple[int, ...]
    waits: tuple[tuple[int, int], ...]  # (consumer, producer): consumer's stream waits for producer
    predicted_ms: float
    num_devices: int = 1
    # Per node; empty: every node on device 0. Inputs and the output live on device 0; a param or constant
    # read on several devices has a node per device; an op reads another device's op or input only
    # through a copy node on its own device (validate.COPY_TARGET).
    device: tuple[int, ...] = ()
    device_algorithm: str = ""  # 'hios-lp' when ops were mapped onto several GPUs


@dataclass(frozen=True, slots=True)
class KernelInfo:
    name: str
    grid: tuple[int, ...]
    block: tuple[int, ...]
    registers_per_thread: int
    shared_memory: int
    occupancy: float


@dataclass(frozen=True, slots=True)
class OpProfile:
    ms: float
    flops: float
    bytes: float
    intensity: str  # 'compute', 'memory' or 'free' (launches no kernel)
    kernels: tuple[KernelInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    streams: str
    order: str
    max_streams: int
    predicted_ms: float
    measured_ms: float = -1.0  # -1: not measured
    chosen: bool = False
    num_devices: int = 1


@dataclass(frozen=True, slots=True)
class Link:
    """Copying `bytes` from the plan's GPU `src` to GPU `dst` takes latency_ms + ms_per_byte * bytes."""

    src: int
    dst: int
    latency_ms: float
    ms_per_byte: float


@dataclass(frozen=True, slots=True)
class Profile:
    method: str  # 'cost-model' or 'cuda-graph'
    ops: tuple[OpProfile, ...]  # indexed by node id
    sequential_ms: float
    candidates: tuple[Candidate, ...] = ()
    links: tuple[Link, ...] = ()  # one per ordered GPU pair of a multi-GPU compile
    links_method: str = ""  # 'cuda-events' (fitted to timed copies) or 'nominal' (simulated devices)
    # 1.3: what the never-lose guard measured and kept (oparac.search.guard); '' where it did not run.
    guard: str = field(default="", metadata=OMIT_DEFAULT)


@dataclass(frozen=True, slots=True)
class Segment:
    """A maximal run of one stream's ops with no cross-stream edge inside, compiled as one fused unit.

    ops are in launch order; waits are the segments whose completion this one waits for. program indexes
    Fusion.programs, the backend's compiled code for this segment (-1: none stored, loading compiles).
    """

    stream: int
    ops: tuple[int, ...]
    waits: tuple[int, ...] = ()
    ms: float = -1.0  # measured time of the fused segment; -1: not measured
    program: int = -1


@dataclass(frozen=True, slots=True)
class KernelStreams:
    """1.4, the kernel-level fused mode: the plan's one program (the whole graph, compiled by inductor) has its
    kernels put on streams. stream and ms are per kernel, in the program's order; launch_order is a permutation
    of the kernels. call_digest names the compiled call the schedule was made for (opara_runtime.fused.
    wrapper_ir); the waits between streams are derived from the program at load, never read from here.
    priority (1.6): each stream's CUDA priority, 0 (normal) or HIGH_PRIORITY, stream 0 (the caller's) always 0;
    () where every stream runs at normal priority."""

    call_digest: str = ""
    stream: tuple[int, ...] = ()
    launch_order: tuple[int, ...] = ()
    ms: tuple[float, ...] = ()            # each kernel's measured time; () where not measured
    algorithm: str = ""                   # '<streams>/<order>' that made it
    critical_path_ms: float = -1.0        # the longest path of measured kernel times
    predicted_ms: float = -1.0            # the simulator's makespan of this schedule
    priority: tuple[int, ...] = field(default=(), metadata=OMIT_DEFAULT)

    @property
    def num_streams(self) -> int:
        return max(self.stream, default=0) + 1


NO_KERNEL_STREAMS = KernelStreams()
# A stream's priority in a kernel schedule: CUDA serves the blocks of a higher-priority stream's kernels first
# (lower numbers are higher). One level above normal is all a schedule asks for.
HIGH_PRIORITY = -1
FUSION_MODES = ("segments", "kernels")


@dataclass(frozen=True, slots=True)
class Fusion:
    """How ops are fused: backend '' (none) or 'inductor', the segments, and their compiled code.

    programs holds each distinct compiled segment once (inductor's standalone artifact, zlib-compressed):
    segments with the same ops on inputs of the same sizes and strides (a model's repeated cells) share one.
    """

    backend: str = ""
    segments: tuple[Segment, ...] = ()
    cache_key: str = ""  # torch build + GPU the programs were compiled for
    programs: tuple[bytes, ...] = ()
    # 1.4: 'segments' (inductor fuses inside each stream segment) or 'kernels' (inductor fuses the whole graph,
    # its kernels are put on streams: `kernels`).
    mode: str = field(default="segments", metadata=OMIT_DEFAULT)
    kernels: KernelStreams = field(default=NO_KERNEL_STREAMS, metadata=OMIT_DEFAULT)


NO_FUSION = Fusion()


@dataclass(frozen=True, slots=True)
class Signature:
    """A signature over the plan's digest (opara_plan.digest) by the key whose id is key_id (opara_plan.signing)."""

    key_id: str
    algorithm: str  # 'ed25519'
    value: bytes


@dataclass(frozen=True, slots=True)
class Plan:
    tool: Tool
    model: ModelInfo
    target: Target
    graph: Graph
    schedule: Schedule
    profile: Profile
    fusion: Fusion = NO_FUSION
    schema_version: tuple[int, ...] = SCHEMA_VERSION
    format: str = FORMAT
    # Not covered by the digest it signs; empty (and not written) for an unsigned plan.
    signature: tuple[Signature, ...] = field(default=(), metadata=OMIT_DEFAULT)

    def to_bytes(self) -> bytes:
        from opara_plan.codec import plan_to_bytes

        return plan_to_bytes(self)

    @staticmethod
    def from_bytes(data: bytes) -> Plan:
        from opara_plan.codec import plan_from_bytes

        return plan_from_bytes(data)

    def save(self, path) -> None:
        from opara_plan.codec import save_plan

        save_plan(self, path)
