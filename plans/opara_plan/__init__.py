"""The Opara plan format: schema, codec, validation and errors. Depends on the stdlib and msgpack only (and on
cryptography for opara_plan.signing, which is imported on its own)."""
from opara_plan.codec import load_plan, plan_from_bytes, plan_to_bytes, save_plan
from opara_plan.errors import (ExecutionError, InputError, ModelError, OparaError, PlanFormatError, PlanMismatchError,
                               SigningError, UnsupportedOpError)
from opara_plan.digest import plan_digest
from opara_plan.fingerprint import graph_fingerprint
from opara_plan.segments import cut_segments
from opara_plan.schema import (CONCAT_PARAM, HIGH_PRIORITY, MAX_CONCAT_PARTS, FUSION_MODES, MEMORY_FORMATS, NO_FUSION, NO_KERNEL_STREAMS, KernelStreams, SCHEMA_VERSION, Candidate, Fusion, Segment, Graph, KernelInfo, Link, ModelInfo, Node, OpProfile,
                               OutTree, Plan, Profile, Ref, Schedule, Signature, Sym, Target, TensorMeta, TensorSpec,
                               Tool)
from opara_plan.validate import COPY_TARGET, DTYPE_SIZES, is_copy, iter_refs, node_refs, validate
from opara_plan.plan_set import (Bucket, PlanSet, bucket_of, load_artifact, load_plan_set, make_plan_set,
                                 plan_set_from_bytes, plan_set_to_bytes, save_plan_set, validate_plan_set)

__all__ = [
    "FUSION_MODES", "HIGH_PRIORITY", "KernelStreams", "NO_KERNEL_STREAMS", "MEMORY_FORMATS", "NO_FUSION", "SCHEMA_VERSION", "Candidate", "ExecutionError", "Fusion", "Segment", "cut_segments", "DTYPE_SIZES", "Graph", "InputError", "KernelInfo", "Link", "ModelError",
    "ModelInfo", "Node", "OpProfile", "OparaError", "OutTree", "Plan", "PlanFormatError",
    "PlanMismatchError", "Profile", "Ref", "Schedule", "Sym", "Target", "TensorMeta", "TensorSpec", "Tool",
    "UnsupportedOpError", "COPY_TARGET", "graph_fingerprint", "is_copy", "iter_refs", "load_plan", "node_refs", "plan_from_bytes",
    "plan_to_bytes", "save_plan", "validate", "Signature", "SigningError", "plan_digest",
    "Bucket", "PlanSet", "bucket_of", "load_artifact", "load_plan_set", "make_plan_set", "plan_set_from_bytes",
    "plan_set_to_bytes", "save_plan_set", "validate_plan_set",
]
