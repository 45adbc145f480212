"""Inductor-shaped wrapper modules for the kernel-level mode's CPU tests: random programs of Triton-style launches
(in_ptr / out_ptr / in_out_ptr parameters), extern calls with out= and ATen-style calls returning new tensors,
plus a namespace of CPU stand-ins and a launcher that checks every cross-stream dependency is synchronised and
that no memory changes hands between streams without ordering (a model of the caching allocator's pools)."""
from __future__ import annotations

import random
import weakref

import torch

SHAPE = (4,)


def random_wrapper(seed: int, kernels: int = 12, args: int = 3) -> str:
    """The source of an inductor-like module: kernel definitions, then Runner.call with a device block."""
    rng = random.Random(seed)
    defs, body = [], []
    live = [f"arg{i}_1" for i in range(args)]
    made: list[str] = []
    for k in range(kernels):
        kind = rng.choice(["triton", "triton", "inplace", "extern", "aten"]) if made else "triton"
        reads = rng.sample(live, min(len(live), rng.randint(1, 2)))
        alive = [m for m in made if m in live]
        if kind == "inplace" and not alive:
            kind = "triton"
        if kind == "triton":
            out = f"buf{k}"
            params = [f"in_ptr{j}" for j in range(len(reads))] + ["out_ptr0", "xnumel", "XBLOCK : tl.constexpr"]
            defs.append(_kernel(f"triton_poi_{k}", params))
            body.append(f"{out} = empty_strided_cuda((4, ), (1, ), torch.float32)")
            body.append("stream0 = get_raw_stream(0)")
            body.append(f"triton_poi_{k}.run({', '.join(reads)}, {out}, 4, stream=stream0)")
            made.append(out)
            live.append(out)
        elif kind == "inplace":  # in_out_ptr0 on an earlier buffer: write-after-read hazards
            target = rng.choice(alive)
            others = [r for r in reads if r != target][:1]
            params = ["in_out_ptr0"] + [f"in_ptr{j}" for j in range(len(others))] + ["xnumel", "XBLOCK : tl.constexpr"]
            defs.append(_kernel(f"triton_poi_{k}", params))
            body.append("stream0 = get_raw_stream(0)")
            body.append(f"triton_poi_{k}.run({', '.join([target] + others)}, 4, stream=stream0)")
        elif kind == "extern":
            out = f"buf{k}"
            a = reads[0]
            body.append(f"{out} = empty_strided_cuda((4, ), (1, ), torch.float32)")
            body.append(f"extern_kernels.add({a}, reinterpret_tensor({reads[-1]}, (4, ), (1, ), 0), out={out})")
            made.append(out)
            live.append(out)
        else:  # an ATen fallback returning a tuple, read through an alias
            out = f"buf{k}"
            body.append(f"{out} = torch.ops.aten.fake_pair.default({reads[0]})")
            body.append(f"buf{k}_0 = {out}[0]")
            body.append(f"assert_size_stride(buf{k}_0, (4, ), (1, ))")
            made.append(f"buf{k}_0")
            live.append(f"buf{k}_0")
        if rng.random() < 0.3 and len(live) > args + 2:
            body.append(f"del {live[args]}")
            live.pop(args)
    returned = ", ".join([name for name in live if name in made][-3:])
    argnames = ", ".join(f"arg{i}_1" for i in range(args))
    lines = [*defs, "", "class Runner:", "    def __init__(self, partitions):",
             "        self.partitions = partitions", "", "    def call(self, args):",
             f"        {argnames}, = args", "        args.clear()"]
    lines += [f"        assert_size_stride(arg{i}_1, (4, ), (1, ))" for i in range(args)]
    lines += ["        with torch.cuda._DeviceGuard(0):", "            torch.cuda.set_device(0)"]
    lines += [f"            {line}" for line in body]
    lines += [f"        return ({returned}, )", "", "runner = Runner(partitions=[])", "call = runner.call"]
    return "\n".join(lines) + "\n"


def _kernel(name: str, params: list[str]) -> str:
    src = f"@triton.jit\ndef {name}({', '.join(params)}):\n    pass\n"
    return f"{name} = async_compile.triton('{name}', '''\n{src}''', device_str='cuda')"


class SimLauncher:
    """Runs a streamed call on the CPU, launches in order, and checks with vector clocks that each kernel starts
    only after the kernels it depends on have finished on their streams (same-stream order or waited events)."""

    def __init__(self, preds: dict[int, tuple[int, ...]], stream: tuple[int, ...], order: tuple[int, ...]) -> None:
        self.preds, self.stream, self.order = preds, stream, order
        self.n_streams = max(stream, default=0) + 1
        self.launched = 0
        self.current = 0
        self.clock = [[0] * self.n_streams for _ in range(self.n_streams)]
        self.done: dict[int, list[int]] = {}
        self.seq: dict[int, int] = {}
        self.events: dict[int, list[int]] = {}
        self.waits = 0
        self.violations: list[str] = []
        # The caching allocator's rule that matters across streams: a freed block goes back to the pool of the
        # stream that was current when it was allocated, and the next allocation there may get it at once.
        self.pools: dict[int, list[int]] = {}
        self.block: dict[int, int] = {}        # storage address -> block
        self.generation: dict[int, int] = {}   # block -> how many times it has been handed out
        self.uses: dict[int, list[tuple[int, int, int]]] = {}  # block -> (generation, stream, seq) of each use
        self.blocks = 0
        self.live = self.peak = 0  # blocks held at once, and the most

    def allocate(self, t: torch.Tensor, *, track: bool = True) -> int:
        """`t`'s storage gets a block from the current stream's pool (or a new one). track: the block goes back to
        that pool when `t` dies (its views keep it alive), as a freed tensor's does; an extern call's workspace is
        handed back by the caller instead."""
        pool = self.pools.setdefault(self.current, [])
        block = pool.pop() if pool else self._fresh()
        self.block[t.untyped_storage().data_ptr()] = block
        self.generation[block] = self.generation.get(block, -1) + 1
        self.live += 1
        self.peak = max(self.peak, self.live)
        if track:
            weakref.finalize(t, self._release, block, self.current)
        return block

    def _release(self, block: int, stream: int) -> None:
        self.live -= 1
        self.pools.setdefault(stream, []).append(block)

    def _fresh(self) -> int:
        self.blocks += 1
        return self.blocks - 1

    # what the streamed call uses
    def fork(self) -> None:
        pass

    def join(self) -> None:
        pass

    def raw(self, k: int) -> int:
        return k

    def on(self, k: int):
        launcher = self

        class _On:
            def __enter__(self):
                launcher.saved, launcher.current = launcher.current, k

            def __exit__(self, *exc):
                launcher.current = launcher.saved
        return _On()

    def record(self, s: int, kernel: int) -> None:
        self.events[kernel] = list(self.clock[s])

    def wait(self, s: int, kernel: int) -> None:
        self.waits += 1
        self.clock[s] = [max(a, b) for a, b in zip(self.clock[s], self.events[kernel])]

    # called by the stand-in kernels
    def launch(self, s: int, tensors=(), scratch: bool = False) -> None:
        """Kernel launch on stream `s` touching `tensors` (and, with scratch, a workspace it allocates from the
        current stream's pool and frees as soon as it is queued, as an extern call does)."""
        k = self.order[self.launched]
        self.launched += 1
        if s != self.stream[k]:
            self.violations.append(f"kernel {k} ran on stream {s}, expected {self.stream[k]}")
        for p in self.preds.get(k, ()):
            ps = self.stream[p]
            if self.clock[s][ps] < self.seq[p]:
                self.violations.append(f"kernel {k} on stream {s} may start before kernel {p} on stream {ps}")
        blocks = {self.block[t.untyped_storage().data_ptr()] for t in tensors
                  if t.untyped_storage().data_ptr() in self.block}
        workspace = None
        if scratch:
            workspace = self.allocate(torch.empty(1), track=False)
            blocks.add(workspace)
        for b in blocks:  # an earlier holder of the block must be done with it before this kernel starts
            for gen, t, q in self.uses.get(b, ()):
                if gen < self.generation[b] and self.clock[s][t] < q:
                    self.violations.append(f"kernel {k} on stream {s} uses memory that a kernel on stream {t} may "
                                           f"still be using (freed and handed on without ordering)")
        self.clock[s][s] += 1
        self.seq[k] = self.clock[s][s]
        for b in blocks:
            self.uses.setdefault(b, []).append((self.generation[b], s, self.seq[k]))
        if workspace is not None:
            self.live -= 1
            self.pools.setdefault(self.current, []).append(workspace)


class _Kernel:
    def __init__(self, name: str, src: str, world) -> None:
        import re

        m = re.search(r"def\s+\w+\((.*?)\)", src, re.S)
        self.params = [p.split(":")[0].strip() for p in m.group(1).split(",")]
        self.index = int(name.rsplit("_", 1)[1])
        self.world = world

    def run(self, *args, stream):
        self.world.launcher_for_run(stream, [a for a in args if isinstance(a, torch.Tensor)])
        tensors = [(p, a) for p, a in zip(self.params, args) if isinstance(a, torch.Tensor)]
        total = sum(a for p, a in tensors if p.startswith("in_ptr")) if any(
            p.startswith("in_ptr") for p, _ in tensors) else torch.zeros(SHAPE)
        for p, a in tensors:
            if p.startswith("out_ptr"):
                a.copy_(total * 0.5 + self.index)
            elif p.startswith("in_out_ptr"):
                a.mul_(0.75).add_(total + self.index)


class World:
    """The namespace a wrapper's code runs in, with CPU stand-ins for inductor's helpers."""

    def __init__(self) -> None:
        self.launcher = None
        world = self

        class AsyncCompile:
            def triton(self, name, src, device_str="cuda"):
                return _Kernel(name, src, world)

        class Extern:
            def add(self, a, b, out):
                world.launch_current((a, b, out), scratch=True)
                torch.add(a, b, out=out)

        def fake_pair(x):
            outs = (x * 2 + 1, x - 1)
            if world.launcher is not None:  # outputs come from the current stream's pool, then the kernel runs
                for t in outs:
                    world.launcher.allocate(t)
            world.launch_current((x, *outs), scratch=True)
            return outs

        self.fake_pair = fake_pair
        self.namespace = {
            "torch": _TorchShim(self), "async_compile": AsyncCompile(), "extern_kernels": Extern(),
            "empty_strided_cuda": self.empty,
            "reinterpret_tensor": lambda t, size, stride, offset: t.as_strided(size, stride, offset),
            "get_raw_stream": lambda index: 0, "assert_size_stride": lambda *a: None,
        }

    def empty(self, size, stride=None, dtype=None) -> torch.Tensor:
        t = torch.full(size, float("nan"))
        if self.launcher is not None:
            self.launcher.allocate(t)
        return t

    def launcher_for_run(self, stream, tensors=()) -> None:
        if self.launcher is not None:
            if stream != self.launcher.current:  # what the launch allocates comes from the current stream's pool
                self.launcher.violations.append(f"a Triton launch on stream {stream} while stream "
                                                f"{self.launcher.current} is current")
            self.launcher.launch(stream, tensors)

    def launch_current(self, tensors=(), scratch: bool = False) -> None:
        if self.launcher is not None:
            self.launcher.launch(self.launcher.current, tensors, scratch=scratch)

    def load(self, source: str) -> dict:
        ns = dict(self.namespace)
        exec(compile(source, "<wrapper>", "exec"), ns)  # noqa: S102 - test code of our own making
        return ns


class _TorchShim:
    """`torch` for the wrapper: the real module, with cuda's device guard and a fake ATen fallback."""

    def __init__(self, world: World) -> None:
        import contextlib
        import types

        self._world = world
        self.float32 = torch.float32
        self.cuda = types.SimpleNamespace(_DeviceGuard=lambda i: contextlib.nullcontext(),
                                          set_device=lambda i: None)
        self.ops = types.SimpleNamespace(aten=types.SimpleNamespace(
            fake_pair=types.SimpleNamespace(default=world.fake_pair)))

    def __getattr__(self, name):
        return getattr(torch, name)


def inputs(args: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g) for _ in range(args)]
