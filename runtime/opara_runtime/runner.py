"""Runner: a loaded plan bound to weights on a device; call it like the model."""
from __future__ import annotations

import threading
import warnings

import torch

from opara_plan import InputError, OutTree, Plan, PlanMismatchError
from opara_runtime.bind import check_weights, place_weights
from opara_runtime.devices import indexed, node_device, plan_devices
from opara_runtime.execute import run_sequential, storage_ids, unaliased
from opara_runtime.ops import constant_tensor, in_layout, materialize, spec_text, torch_dtype


def rebuild(tree: OutTree, flat: list):
    """Flat outputs -> the model's own structure (dicts and ModelOutputs come back as dicts)."""
    if tree.kind == "tensor":
        return flat[tree.index]
    if tree.kind == "none":
        return None
    children = [rebuild(c, flat) for c in tree.children]
    if tree.kind == "list":
        return children
    if tree.kind == "dict":
        return dict(zip(tree.keys, children))
    return tuple(children)


class Runner:
    """Executes one plan. On CUDA, one captured multi-stream graph is replayed per call.

    Calls are serialised: the static buffers of a captured graph admit one inference at a time.
    """

    def __init__(self, plan: Plan, weights: dict, device: torch.device, *, capture: bool | None = None,
                 devices=None, compiled_segments: bool = True, trust_compiled_code: bool = False,
                 trusted_keys=None, pool=None, compiled=None) -> None:
        """device: the first device (inputs and outputs live there); devices: one per plan device id, by
        default consecutive GPUs from `device` (a plan for several GPUs; on the CPU every id is the CPU).
        compiled_segments=False compiles a fused plan's segments instead of loading the stored ones; they are
        loaded only when trusted (trust_compiled_code, or signed by one of trusted_keys: fused.prepare_fused).
        compiled: a fused plan's programs already in this process, used instead of the stored ones (the
        compiler's timing runners: fused.prepare_fused)."""
        check_weights(plan, weights)
        if plan.fusion.backend and plan.schedule.num_devices > 1:
            raise PlanMismatchError("plan fusion: fused segments run on one GPU, this plan uses "
                                    f"{plan.schedule.num_devices}")
        self.plan = plan
        self.devices = plan_devices(plan, device, devices)
        self.device = device = self.devices[0]
        self._lock = threading.Lock()
        nodes = plan.graph.nodes
        base: list = [None] * len(nodes)
        for i, w in place_weights(plan, weights, self.devices).items():
            base[i] = w
        for i, node in enumerate(nodes):
            if node.kind == "constant":
                base[i] = constant_tensor(node, self.devices[node_device(plan, i)])
            elif node.kind == "input":
                meta = node.outputs[0]
                # Zeros, not empty: warm-up runs before any real input arrives, and garbage integer
                # inputs would index out of range (embedding lookups assert on the device).
                # channels_last plans keep 4-D floating-point inputs NHWC: the caller's NCHW tensor is
                # transposed by the copy into this buffer.
                zeros = torch.zeros(meta.shape, dtype=torch_dtype(meta.dtype), device=device)
                base[i] = in_layout(zeros, plan.model.memory_format)
        self._base = base
        # Outputs sharing these storages are cloned on the CPU path (execute.unaliased).
        self._leaf_storages = storage_ids(base[i] for i, n in enumerate(nodes) if n.kind in ("param", "constant"))
        self._input_nodes = [node for node in nodes if node.kind == "input"]
        self._input_ids = [i for i, node in enumerate(nodes) if node.kind == "input"]
        # What every call's inputs are compared against, prepared once: the check is on the hot path.
        self._expected = [(torch.Size(n.outputs[0].shape), torch_dtype(n.outputs[0].dtype)) for n in self._input_nodes]
        # Outputs come back as eager returns them: a channels_last plan's NHWC outputs are made contiguous.
        self._contiguous_outputs = plan.model.memory_format == "channels_last"
        self._out_format = torch.contiguous_format if self._contiguous_outputs else torch.preserve_format
        use_graph = device.type == "cuda" if capture is None else capture
        self.captured = None
        self.programs = None
        if use_graph and plan.fusion.backend:
            from opara_runtime.fused import prepare_fused

            self.programs = prepare_fused(plan, device, base, use_artifacts=compiled_segments,
                                          trust_compiled_code=trust_compiled_code, trusted_keys=trusted_keys,
                                          compiled=compiled)
        if use_graph:
            from opara_runtime.capture import CapturedPlan

            self.captured = CapturedPlan(plan, base, self.devices, programs=self.programs, pool=pool)

    def check_inputs(self, inputs) -> None:
        if len(inputs) == len(self._expected):
            device = self.device
            for x, (shape, dtype) in zip(inputs, self._expected):
                if not (isinstance(x, torch.Tensor) and x.shape == shape and x.dtype == dtype
                        and x.device == device):
                    break
            else:
                return
        self._explain_bad_inputs(inputs)

    def _explain_bad_inputs(self, inputs) -> None:
        if len(inputs) != len(self._input_nodes):
            names = ", ".join(repr(n.name) for n in self._input_nodes)
            raise InputError(f"expected {len(self._input_nodes)} inputs ({names}), got {len(inputs)}")
        for k, (node, x) in enumerate(zip(self._input_nodes, inputs)):
            meta = node.outputs[0]
            want = spec_text(meta.dtype, meta.shape, self.device)
            if not isinstance(x, torch.Tensor):
                raise InputError(f"input {k} {node.name!r}: expected {want}, got {type(x).__name__}")
            got_dtype = str(x.dtype).removeprefix("torch.")
            same_device = x.device.type == self.device.type and (
                self.device.index is None or x.device.index in (None, self.device.index))
            if tuple(x.shape) != meta.shape or got_dtype != meta.dtype or not same_device:
                raise InputError(f"input {k} {node.name!r}: expected {want}, "
                                 f"got {spec_text(got_dtype, tuple(x.shape), x.device)}")

    def input_buffers(self) -> tuple[torch.Tensor, ...]:
        """The runner's own input tensors, one per model input, on its device. Fill them in place and pass
        them back (`runner(*bufs)`): the call then skips copying inputs in. On CUDA they are the captured
        graph's static inputs, so they are shared by every call of this runner."""
        if self.captured is not None:
            return tuple(self.captured.static_inputs)
        return tuple(self._base[i] for i in self._input_ids)

    @property
    def base_values(self) -> list:
        """Every node's starting value (weights, constants, zeroed inputs; None for ops), as a new list."""
        return list(self._base)

    def __call__(self, *inputs, zero_copy: bool = False):
        """Run the plan on `inputs`; outputs in the model's structure. They are copies, except that on CUDA
        zero_copy=True returns the captured graph's static output buffers (valid until the next call); in a
        channels_last plan those may be channels_last-strided, where the copies are contiguous."""
        self.check_inputs(inputs)
        with self._lock:
            if self.captured is not None:
                flat = self.captured.replay(inputs)
                if not zero_copy:
                    flat = [t.clone(memory_format=self._out_format) for t in flat]
            else:
                values = list(self._base)
                for i, x in zip(self._input_ids, inputs):
                    values[i] = x
                run_sequential(self.plan, values, self.devices)
                flat = [materialize(r, values, self.device) for r in self.plan.graph.nodes[-1].args]
                if self._contiguous_outputs:
                    flat = [t.contiguous() for t in flat]
                flat = unaliased(flat, self._leaf_storages | storage_ids(inputs))
        return rebuild(self.plan.model.output_tree, flat)


def choose_device(plan: Plan, device) -> torch.device:
    """The plan's target kind when available; a CUDA plan falls back to the CPU path with a warning."""
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise PlanMismatchError(f"device {device} was asked for, but CUDA is not available here")
        return indexed(device)
    if plan.target.device_type == "cuda":
        if torch.cuda.is_available():
            return indexed(torch.device("cuda"))
        warnings.warn("the plan was compiled for a CUDA GPU but CUDA is not available: running it on the "
                      "CPU, sequentially (correctness path)", stacklevel=3)
    return torch.device("cpu")


def check_target(plan: Plan, device: torch.device) -> None:
    """Refuse a different compute capability or too few GPUs; warn on a different GPU name or software versions."""
    t = plan.target
    if device.type != "cuda":
        return
    if plan.schedule.num_devices > torch.cuda.device_count():
        raise PlanMismatchError(f"plan schedule: needs {plan.schedule.num_devices} GPUs, this machine has "
                                f"{torch.cuda.device_count()}; compile the plan for fewer devices or load it on "
                                f"a machine with more GPUs")
    if t.device_type != "cuda":
        return
    props = torch.cuda.get_device_properties(device)
    here = (props.major, props.minor)
    if tuple(t.compute_capability) != here:
        raise PlanMismatchError(f"plan target: compiled for compute capability "
                                f"{'.'.join(map(str, t.compute_capability))} ({t.gpu_name}), this GPU "
                                f"{props.name} is {here[0]}.{here[1]}; recompile the plan on this GPU")
    if t.gpu_name != props.name:
        warnings.warn(f"plan was profiled on {t.gpu_name}, running on {props.name}: its schedule may not be "
                      f"the best here", stacklevel=3)
    if t.torch and t.torch.split("+")[0] != torch.__version__.split("+")[0]:
        warnings.warn(f"plan was profiled with torch {t.torch}, running with torch {torch.__version__}",
                      stacklevel=3)
