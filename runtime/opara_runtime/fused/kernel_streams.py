"""The kernel-level fused mode's launches: inductor's compiled call rewritten to put its kernels on streams.

Given a parsed wrapper (wrapper_ir) and a stream per kernel with a launch order (the plan's KernelStreams, or one
stream for profiling), `streamed_source` writes a new `call(args)` from the wrapper's own statements: on several
streams each allocation just before its first user, with that user's stream current, and a `del` once every user is
ordered before a later launch of that stream (_Frees; without freeing, every allocation before the first launch and
no `del`), other host statements (views, checks) where their names are first needed, each kernel on its stream
(made current while it launches; Triton launches also get that stream's raw handle), and an event wait wherever a
kernel depends on one from another stream that the stream has not already waited for (vector clocks, latest
producer first). On one stream in the program's own order the call is the original, statement for statement, its
frees included. The waits come from the program's own dependencies, never from the plan: a stream assignment or
launch order from a plan can make the program slower, never wrong, and an order that breaks a dependency is
refused.

The new code is compiled in the wrapper module's namespace (its kernels, allocators and helpers) and replaces
the compiled graph's `current_callable`, so inductor's runtime wrapper around it is unchanged.
"""
from __future__ import annotations

import ast
import contextlib

from opara_plan.clocks import needed_waits, vector_clocks
from opara_plan.validate import MAX_KERNEL_STREAMS
from opara_runtime.fused.wrapper_ir import Statement, WrapperProgram


# Freeing buffers during a call on several streams (_Frees): checked on the CPU against a model of the caching
# allocator and on the H200 (bit-identical outputs, a third of the peak memory: docs/design.md section 6.1).
# False allocates every buffer before the first launch and frees nothing during the call.
FREE_ON_STREAMS = True


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
                    timed: bool = False, free: bool | None = None) -> str:
    """The source of `_opara_make(_L)`, which returns the streamed `call(args)`; `_L` is the launcher (streams
    and events). timed=True (one stream only) also records a timing event after every kernel. free: on several
    streams, allocate each buffer lazily and free it during the call (_Frees); default FREE_ON_STREAMS."""
    check_schedule(prog, stream, order)
    if timed and any(stream):
        raise KernelScheduleError("timed launches run on one stream")
    if not any(stream) and tuple(order) == tuple(range(prog.num_kernels)):
        return _source(prog, _as_compiled(prog, timed))
    waits = cross_stream_waits(prog, stream, order)
    waited = {p for ps in waits.values() for p in ps}
    defining = {name: s for s in prog.statements for name in s.defines}
    frees = _Frees(prog, stream, order, waits) if any(stream) and (
        FREE_ON_STREAMS if free is None else free) else None
    emitted: set[int] = set()
    body: list[ast.stmt] = []

    def emit_host(s: Statement, on: int = 0) -> None:
        if id(s) in emitted:
            return
        for name in s.uses:
            if name in defining and defining[name] is not s:
                need(defining[name], on)
        emitted.add(id(s))
        if s.kind == "alloc" and frees is not None:
            # allocated with its first user's stream current: from that stream's pool (see _Frees)
            frees.allocated(s, on)
            body.extend(_on(on, [s.node]))
        else:
            body.append(s.node)

    def need(s: Statement, on: int = 0) -> None:
        if s.kind in ("kernel", "barrier"):
            if id(s) not in emitted:
                raise KernelScheduleError(f"kernel {s.kernel} is used before it is launched")
            return
        emit_host(s, on)

    def release(storage: int) -> None:
        """`del` of every name of `storage`, after the views and checks still to come that name it; nothing where
        one of them could not be written here yet (the buffer then lives to the end of the call)."""
        names = frees.names[storage]
        pending = [s for s in prog.statements if s.kind != "drop" and id(s) not in emitted
                   and any(n in names for n in s.uses)]
        if not all(s.kind in ("alias", "check") and placeable(s) for s in pending):
            return
        for s in pending:
            emit_host(s)
        if all(id(defining[n]) in emitted for n in names if n in defining):
            body.extend(_parse(f"del {', '.join(names)}"))

    def placeable(s: Statement) -> bool:
        """Whether host statement `s` can be written now without launching or allocating anything first."""
        for n in s.uses:
            d = defining.get(n)
            if d is None or d is s or id(d) in emitted:
                continue
            if d.kind != "alias" or not placeable(d):
                return False
        return True

    for s in prog.statements:  # set_device and friends first, as in the original
        if s.kind == "host":
            emit_host(s)
    # With several streams and no freeing, every buffer is allocated before the first launch. An allocation made
    # later, on the host while stream 0 is current, may be handed memory that an earlier stream-0 call used as
    # scratch and freed (a cuDNN attention's workspace); that is safe for stream-0 work, which runs after the
    # call, but not for a kernel on another stream, which could write the buffer while the call still runs (seen
    # on Llama in fp16 on an H200). With freeing, each buffer is allocated just before its first user, with that
    # user's stream current, which makes the same case safe (_Frees). One stream keeps the original's
    # allocation points.
    for s in prog.statements if any(stream) else ():
        if s.kind == "alloc":
            late = [n for n in s.uses if n in defining and defining[n].kind in ("kernel", "barrier")]
            if late:
                raise KernelScheduleError(f"an allocation depends on {late[0]}, which a kernel computes; kernel "
                                          f"streams need every buffer allocated before the first launch")
            if frees is None or frees.hoisted(s):
                emit_host(s)
    body.extend(_parse("_L.fork()"))
    for k in order:
        s = prog.kernels[k]
        for name in s.uses:
            if name in defining and defining[name] is not s:
                need(defining[name], stream[k])
        for p in waits.get(k, ()):
            body.extend(_parse(f"_L.wait({stream[k]}, {p})"))
        emitted.add(id(s))
        body.extend(_launch(s, stream[k]))
        if k in waited:
            body.extend(_parse(f"_L.record({stream[k]}, {k})"))
        if timed:
            body.extend(_parse(f"_L.tick({k})"))
        for storage in frees.after(k) if frees is not None else ():
            release(storage)
    for s in prog.statements:  # checks and views nothing launched needed, in their original order
        if s.kind in ("alloc", "alias", "check") and id(s) not in emitted:
            emit_host(s)
    body.extend(_parse("_L.join()"))
    return _source(prog, body)


class _Frees:
    """When a buffer can go back to the caching allocator during a call on several streams.

    The allocator hands a freed block only to later allocations made while the same stream is current, and the
    work they feed is queued on that stream after everything queued there before. So a buffer allocated with
    stream S current, just before its first user (in launch order) is launched on S, is safe to free right after
    a launch on S that is ordered after every one of its users (vector clocks over the program's waits):
    whatever gets its block next runs after that launch, and the buffer's own block was free of earlier holders
    by the same rule once its first user ran. That needs every other user to be ordered after the first one (it
    writes the buffer first); a buffer where that does not hold is allocated before the first launch and never
    freed, as is a buffer with no such launch after its users. Only buffers the call allocates itself
    (empty_strided) are freed, never an input, an output, or a tensor an extern call returned (whose storage the
    parse may not see through); and nothing is freed where a name is bound twice.
    """

    def __init__(self, prog: WrapperProgram, stream, order, waits: dict[int, list[int]]) -> None:
        self.prog, self.stream = prog, stream
        self.names: dict[int, list[str]] = {}
        for n, storage in prog.storage_of.items():
            self.names.setdefault(storage, []).append(n)
        bound: dict[str, int] = {n: 1 for n in prog.arg_names}
        for s in prog.statements:
            for n in s.defines:
                bound[n] = bound.get(n, 0) + 1
        pinned = {prog.storage_of[n] for n in prog.arg_names if n in prog.storage_of}
        pinned |= {prog.storage_of[n.id] for e in prog.epilogue for n in ast.walk(e)
                   if isinstance(n, ast.Name) and n.id in prog.storage_of}
        allocs = {prog.storage_of[s.defines[0]] for s in prog.statements if s.kind == "alloc"}
        users: dict[int, list[int]] = {}
        for k in order:  # launch order: users[x][0] is x's first user
            for x in prog.kernels[k].reads | prog.kernels[k].writes:
                if x in allocs:
                    users.setdefault(x, []).append(k)
        self.seq, self.start = vector_clocks(order, stream, max(stream) + 1,
                                             [(c, p) for c, ps in waits.items() for p in ps])
        self.unordered = {x for x, us in users.items()
                          if any(self.start[u][stream[us[0]]] < self.seq[us[0]] for u in us[1:])}
        freeable = not any(c > 1 for c in bound.values())
        self.users = {x: set(us) for x, us in users.items()
                      if freeable and x not in pinned and x not in self.unordered}
        self.touches: dict[int, list[int]] = {}
        for x, us in self.users.items():
            for u in us:
                self.touches.setdefault(u, []).append(x)
        self.left = {x: len(us) for x, us in self.users.items()}
        self.home: dict[int, int] = {}      # storage -> the stream current at its allocation
        self.ready: set[int] = set()        # every user launched, not yet freed

    def hoisted(self, s: Statement) -> bool:
        """Whether alloc statement `s` is made before the first launch (its users are not all ordered after the
        first)."""
        return self.prog.storage_of[s.defines[0]] in self.unordered

    def allocated(self, s: Statement, stream: int) -> None:
        self.home[self.prog.storage_of[s.defines[0]]] = stream

    def after(self, k: int) -> list[int]:
        """Buffers to free right after kernel k's launch."""
        for x in self.touches.get(k, ()):
            self.left[x] -= 1
            if not self.left[x]:
                self.ready.add(x)
        s, start = self.stream[k], self.start[k]
        out = [x for x in sorted(self.ready) if self.home.get(x) == s
               and all(u == k or start[self.stream[u]] >= self.seq[u] for u in self.users[x])]
        self.ready.difference_update(out)
        return out


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
    return _on(stream, [node])


def _on(stream: int, nodes: list[ast.stmt]) -> list[ast.stmt]:
    """`nodes` with `stream` current (stream 0 is already)."""
    if stream == 0:
        return nodes
    return [ast.With(items=[ast.withitem(context_expr=_parse(f"_L.on({stream})")[0].value)], body=nodes)]


def _copy(node: ast.stmt) -> ast.stmt:
    return ast.parse(ast.unparse(node)).body[0]


def _parse(text: str) -> list[ast.stmt]:
    return ast.parse(text).body


def _args(name: str) -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[ast.arg(name)], vararg=None, kwonlyargs=[], kw_defaults=[],
                         kwarg=None, defaults=[])


def streamed_code(prog: WrapperProgram, stream: tuple[int, ...], order: tuple[int, ...], *, timed: bool = False,
                  free: bool | None = None):
    """streamed_source compiled, once per program and schedule (WrapperProgram.compiled_calls); a schedule the
    program cannot take is refused (KernelScheduleError) and not remembered."""
    free = FREE_ON_STREAMS if free is None else free
    key = (tuple(stream), tuple(order), timed, free)
    code = prog.compiled_calls.get(key)
    if code is None:
        code = compile(streamed_source(prog, stream, order, timed=timed, free=free), "<opara kernel streams>", "exec")
        prog.compiled_calls[key] = code
    return code


def streamed_maker(prog: WrapperProgram, namespace: dict, stream: tuple[int, ...], order: tuple[int, ...], *,
                   timed: bool = False, free: bool | None = None):
    """`_opara_make(launcher)`, compiled in the wrapper module's namespace (its globals: kernels and helpers);
    a schedule the program cannot take is refused here (KernelScheduleError), before any stream exists."""
    local: dict = {}
    exec(streamed_code(prog, stream, order, timed=timed, free=free), namespace, local)  # noqa: S102 - trusted
    return local["_opara_make"]


def build_call(prog: WrapperProgram, namespace: dict, stream: tuple[int, ...], order: tuple[int, ...],
               launcher, *, timed: bool = False, free: bool | None = None):
    """The streamed call on `launcher`."""
    return streamed_maker(prog, namespace, stream, order, timed=timed, free=free)(launcher)


class CudaLauncher:
    """Streams and events for a streamed call: stream 0 is the caller's current stream, the others are this
    launcher's own; they fork from stream 0 at the start of each call and join it at the end.

    priority: each stream's (KernelStreams.priority; () for all normal), given to the side streams when they are
    created. A kernel captured on a stream keeps that stream's priority in every replay (PyTorch instantiates its
    CUDA graphs to use node priorities), so a plan's raised streams are raised in its graph too."""

    def __init__(self, num_streams: int, device, *, timed: bool = False, priority: tuple[int, ...] = ()) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.side = [torch.cuda.Stream(device=device, priority=priority[k] if priority else 0)
                     for k in range(1, max(1, num_streams))]
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
