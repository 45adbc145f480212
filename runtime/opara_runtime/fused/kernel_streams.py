"""The kernel-level fused mode's launches: inductor's compiled call rewritten to put its kernels on streams.

Given a parsed wrapper (wrapper_ir) and a stream per kernel with a launch order (the plan's KernelStreams, or one
stream for profiling), `streamed_source` writes a new `call(args)` from the wrapper's own statements: every
allocation before the first launch (on several streams), other host statements (views, checks) where their
names are first needed, each kernel on its stream (made current while it launches; Triton launches also get
that stream's raw handle), and an event wait wherever a kernel depends on one from another stream that the
stream has not already waited for (vector clocks, latest producer first). On one stream in the program's own
order the call is the original, statement for statement, its frees included. The waits come from the program's own
dependencies, never from the plan: a stream assignment or launch order from a plan can make the program slower,
never wrong, and an order that breaks a dependency is refused.

The new code is compiled in the wrapper module's namespace (its kernels, allocators and helpers) and replaces
the compiled graph's `current_callable`, so inductor's runtime wrapper around it is unchanged.
"""
from __future__ import annotations

import ast
import contextlib

from opara_plan.clocks import needed_waits
from opara_plan.validate import MAX_KERNEL_STREAMS
from opara_runtime.fused.wrapper_ir import Statement, WrapperProgram


class KernelScheduleError(ValueError):
    """A kernel schedule that does not fit the program it is for."""


def check_schedule(prog: WrapperProgram, stream: tuple[int, ...], order: tuple[int, ...]) -> None:
    """`stream` gives each kernel a stream, `order` is a launch order respecting every dependency."""
    n = prog.num_kernels
    if len(stream) != n:
        raise KernelScheduleError(f"kernel streams: expected one stream per kernel ({n}), found {len(stream)}")
    if sorted(order) != list(range(n)):
        raise KernelScheduleError(f"kernel launch order: expected a permutation of the {n} kernels")
    bad = [s for s in stream if not 0 <= s < MAX_KERNEL_STREAMS]
    if bad:
        raise KernelScheduleError(f"kernel streams: expected 0..{MAX_KERNEL_STREAMS - 1}, found {bad[0]}")
    position = {k: i for i, k in enumerate(order)}
    for c, ps in prog.preds.items():
        for p in ps:
            if position[p] > position[c]:
                raise KernelScheduleError(f"kernel launch order: kernel {c} is launched before kernel {p}, "
                                          f"which it depends on")


def cross_stream_waits(prog: WrapperProgram, stream: tuple[int, ...], order: tuple[int, ...]) -> dict[int, list[int]]:
    """kernel -> the kernels on other streams whose events it waits for, only those that same-stream order and
    earlier waits do not already imply (opara_plan.clocks.needed_waits over the program's dependencies)."""
    waits: dict[int, list[int]] = {}
    for consumer, producer in needed_waits(prog.preds, stream, order):
        waits.setdefault(consumer, []).append(producer)
    return waits


def streamed_source(prog: WrapperProgram, stream: tuple[int, ...], order: tuple[int, ...], *,
                    timed: bool = False) -> str:
    """The source of `_opara_make(_L)`, which returns the streamed `call(args)`; `_L` is the launcher (streams
    and events). timed=True (one stream only) also records a timing event after every kernel."""
    check_schedule(prog, stream, order)
    if timed and any(stream):
        raise KernelScheduleError("timed launches run on one stream")
    if not any(stream) and tuple(order) == tuple(range(prog.num_kernels)):
        return _source(prog, _as_compiled(prog, timed))
    waits = cross_stream_waits(prog, stream, order)
    waited = {p for ps in waits.values() for p in ps}
    defining = {name: s for s in prog.statements for name in s.defines}
    emitted: set[int] = set()
    body: list[ast.stmt] = []

    def emit_host(s: Statement) -> None:
        if id(s) in emitted:
            return
        for name in s.uses:
            if name in defining and defining[name] is not s:
                need(defining[name])
        emitted.add(id(s))
        body.append(s.node)

    def need(s: Statement) -> None:
        if s.kind in ("kernel", "barrier"):
            if id(s) not in emitted:
                raise KernelScheduleError(f"kernel {s.kernel} is used before it is launched")
            return
        emit_host(s)

    for s in prog.statements:  # set_device and friends first, as in the original
        if s.kind == "host":
            emit_host(s)
    # With several streams every buffer is allocated before the first launch. An allocation made later, on the
    # host while stream 0 is current, may be handed memory that an earlier stream-0 call used as scratch and freed
    # (a cuDNN attention's workspace); that is safe for stream-0 work, which runs after the call, but not for a
    # kernel on another stream, which could write the buffer while the call still runs (seen on Llama in fp16 on
    # an H200). One stream keeps the original's allocation points.
    for s in prog.statements if any(stream) else ():
        if s.kind == "alloc":
            late = [n for n in s.uses if n in defining and defining[n].kind in ("kernel", "barrier")]
            if late:
                raise KernelScheduleError(f"an allocation depends on {late[0]}, which a kernel computes; kernel "
                                          f"streams need every buffer allocated before the first launch")
            emit_host(s)
    body.extend(_parse("_L.fork()"))
    for k in order:
        s = prog.kernels[k]
        for name in s.uses:
            if name in defining and defining[name] is not s:
                need(defining[name])
        for p in waits.get(k, ()):
            body.extend(_parse(f"_L.wait({stream[k]}, {p})"))
        emitted.add(id(s))
        body.extend(_launch(s, stream[k]))
        if k in waited:
            body.extend(_parse(f"_L.record({stream[k]}, {k})"))
        if timed:
            body.extend(_parse(f"_L.tick({k})"))
    for s in prog.statements:  # checks and views nothing launched needed, in their original order
        if s.kind in ("alloc", "alias", "check") and id(s) not in emitted:
            emit_host(s)
    body.extend(_parse("_L.join()"))
    return _source(prog, body)


def _as_compiled(prog: WrapperProgram, timed: bool) -> list[ast.stmt]:
    """The device block of the one-stream program in its own order, every statement where inductor put it: its
    `del`s too, so each buffer goes back to the allocator after its last use, as in the original call (on one
    stream a freed block is only reused by later work of that stream). Only the raw-stream lookups go: Triton
    launches get the launcher's stream 0."""
    body: list[ast.stmt] = []
    forked = False
    for s in prog.statements:
        if s.kind == "drop" and not isinstance(s.node, ast.Delete):
            continue
        if s.kind in ("kernel", "barrier"):
            if not forked:
                body.extend(_parse("_L.fork()"))
                forked = True
            body.extend(_launch(s, 0))
            if timed:
                body.extend(_parse(f"_L.tick({s.kernel})"))
            continue
        body.append(s.node)
    if not forked:
        body.extend(_parse("_L.fork()"))
    body.extend(_parse("_L.join()"))
    return body


def _source(prog: WrapperProgram, body: list[ast.stmt]) -> str:
    """`_opara_make(_L)` around the device block `body`: the call's prologue, the block, its epilogue."""
    fn_body = list(prog.prologue)
    if prog.device_block is not None:
        block = ast.With(items=prog.device_block.items, body=body)
        fn_body.append(block)
    else:
        fn_body.extend(body)
    fn_body.extend(prog.epilogue)
    call = ast.FunctionDef(name="call", args=_args("args"), body=fn_body, decorator_list=[], returns=None,
                           type_params=[])
    make = ast.FunctionDef(name="_opara_make", args=_args("_L"), body=[call, ast.Return(ast.Name("call"))],
                           decorator_list=[], returns=None, type_params=[])
    module = ast.Module(body=[make], type_ignores=[])
    return ast.unparse(ast.fix_missing_locations(module))


def _launch(s: Statement, stream: int) -> list[ast.stmt]:
    """The statement launching on `stream`, with that stream current while it launches, as stream0 is in the
    original: whatever the launch allocates (an extern call's workspace, a Triton kernel's scratch) then comes
    from that stream's pool, which hands a freed block only to later work of the same stream."""
    node = _copy(s.node)
    if s.launch == "triton":
        call = node.value
        for kw in call.keywords:
            if kw.arg == "stream":
                kw.value = _parse(f"_L.raw({stream})")[0].value
    if stream == 0:  # the caller's current stream already
        return [node]
    return [ast.With(items=[ast.withitem(context_expr=_parse(f"_L.on({stream})")[0].value)], body=[node])]


def _copy(node: ast.stmt) -> ast.stmt:
    return ast.parse(ast.unparse(node)).body[0]


def _parse(text: str) -> list[ast.stmt]:
    return ast.parse(text).body


def _args(name: str) -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[ast.arg(name)], vararg=None, kwonlyargs=[], kw_defaults=[],
                         kwarg=None, defaults=[])


def streamed_maker(prog: WrapperProgram, namespace: dict, stream: tuple[int, ...], order: tuple[int, ...], *,
                   timed: bool = False):
    """`_opara_make(launcher)`, compiled in the wrapper module's namespace (its globals: kernels and helpers);
    a schedule the program cannot take is refused here (KernelScheduleError), before any stream exists."""
    source = streamed_source(prog, stream, order, timed=timed)
    local: dict = {}
    exec(compile(source, "<opara kernel streams>", "exec"), namespace, local)  # noqa: S102 - trusted program
    return local["_opara_make"]


def build_call(prog: WrapperProgram, namespace: dict, stream: tuple[int, ...], order: tuple[int, ...],
               launcher, *, timed: bool = False):
    """The streamed call on `launcher`."""
    return streamed_maker(prog, namespace, stream, order, timed=timed)(launcher)


class CudaLauncher:
    """Streams and events for a streamed call: stream 0 is the caller's current stream, the others are this
    launcher's own; they fork from stream 0 at the start of each call and join it at the end."""

    def __init__(self, num_streams: int, device, *, timed: bool = False) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.side = [torch.cuda.Stream(device=device) for _ in range(max(0, num_streams - 1))]
        self.timed = timed
        self.ticks: list = []
        self.streams: list = []
        self.raws: list[int] = []
        self.events: dict[int, object] = {}

    def fork(self) -> None:
        main = self.torch.cuda.current_stream(self.device)
        self.streams = [main] + self.side
        self.raws = [s.cuda_stream for s in self.streams]
        self.events = {}
        for s in self.side:
            s.wait_stream(main)
        if self.timed:
            self.ticks = [self._event(main)]

    def raw(self, k: int) -> int:
        return self.raws[k]

    def on(self, k: int):
        return self.torch.cuda.stream(self.streams[k]) if k else contextlib.nullcontext()

    def record(self, k: int, kernel: int) -> None:
        e = self.torch.cuda.Event()
        e.record(self.streams[k])
        self.events[kernel] = e

    def wait(self, k: int, kernel: int) -> None:
        self.streams[k].wait_event(self.events[kernel])

    def tick(self, kernel: int) -> None:
        self.ticks.append(self._event(self.streams[0]))

    def join(self) -> None:
        main = self.streams[0]
        for s in self.side:
            main.wait_stream(s)
        self.events = {}

    def _event(self, stream):
        e = self.torch.cuda.Event(enable_timing=True)
        e.record(stream)
        return e
