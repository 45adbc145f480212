"""The kernel-level fused mode on a compiled program: find inductor's compiled graph inside it, parse its wrapper,
and replace its call with one that launches the kernels on the plan's streams.

A kernel-mode plan has one segment, the whole graph, compiled by inductor as one program (INDUCTOR_KERNEL_CONFIG:
no buffer reuse, so fewer false dependencies between kernels). Its `Fusion.kernels` says which stream each of the
program's kernels runs on and in which order they launch; it is made for one wrapper (its digest), so a program
compiled differently (another torch build) does not get a schedule made for another one: it then runs on one
stream, with a warning.
"""
from __future__ import annotations

import functools
import warnings

from opara_plan import KernelStreams
from opara_runtime.fused.kernel_streams import CudaLauncher, KernelScheduleError, check_schedule, streamed_maker
from opara_runtime.fused.wrapper_ir import WrapperFormatError, WrapperProgram, parse_wrapper

_MAX_DEPTH = 12
# The compiler opens one compiled program once per schedule it captures: the wrapper is parsed once per source,
# which for a few hundred kernels takes a tenth of a second or more (parse_wrapper is pure, its result read-only).
_parsed = functools.lru_cache(maxsize=4)(parse_wrapper)
_REPLACED = "_opara_replaced_call"  # on an installed streamed call: the wrapper's call it stands in for


def compiled_graph_of(fn):
    """Inductor's CompiledFxGraph inside a compiled program (a standalone artifact and the runtime wrappers
    around it), or None. The program must have run once: a loaded artifact imports its code on its first call."""
    from torch._inductor.output_code import CompiledFxGraph

    seen: set[int] = set()

    def walk(obj, depth: int):
        if isinstance(obj, CompiledFxGraph):
            return obj
        if depth > _MAX_DEPTH or id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float)):
            return None
        seen.add(id(obj))
        children = []
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                children.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        children += [getattr(obj, a, None) for a in ("_compiled_fn", "compiled_fn", "__wrapped__")]
        if isinstance(obj, (list, tuple)):
            children += list(obj)
        for child in children:
            found = walk(child, depth + 1)
            if found is not None:
                return found
        return None

    return walk(fn, 0)


class KernelProgram:
    """A compiled whole-graph program opened up: its compiled graph, the wrapper's parsed call and namespace.

    The graph's current_callable is the wrapper's call, or a closure around it (inductor wraps it to copy
    misaligned inputs first): the call is replaced where it sits, so any such wrapping stays in force."""

    def __init__(self, fn) -> None:
        graph = compiled_graph_of(fn)
        if graph is None or graph.current_callable is None:
            raise WrapperFormatError("no compiled inductor graph found in the program (has it run once?)")
        source = getattr(graph, "source_code", None)
        if not isinstance(source, str):
            raise WrapperFormatError("the compiled graph carries no wrapper source")
        self.graph = graph
        self._slot, self.original = _locate_call(graph)
        func = getattr(self.original, "__func__", self.original)
        self.namespace = func.__globals__
        self.wrapper: WrapperProgram = _parsed(source)

    def install(self, stream: tuple[int, ...], order: tuple[int, ...], device, *, timed: bool = False,
                priority: tuple[int, ...] = ()):
        """Make the compiled graph launch on these streams (at these priorities, KernelStreams.priority); returns
        the launcher (its ticks, when timed)."""
        make = streamed_maker(self.wrapper, self.namespace, stream, order, timed=timed)
        launcher = CudaLauncher(max(stream, default=0) + 1, device, timed=timed, priority=priority)
        self._set(make(launcher))
        return launcher

    def restore(self) -> None:
        self._set(self.original)

    def _set(self, call) -> None:
        if call is not self.original:
            # A program opened again while a schedule is installed (the compiler captures several schedules of one
            # program, each runner installing its own) finds the wrapper's own call through this tag.
            setattr(call, _REPLACED, self.original)
        if self._slot is None:
            self.graph.current_callable = call
        else:
            self._slot.cell_contents = call


def _is_wrapper_call(f) -> bool:
    func = getattr(f, "__func__", f)
    return (getattr(func, "__name__", "") == "call" and getattr(func, "__qualname__", "") in ("call", "Runner.call")
            and isinstance(getattr(func, "__globals__", None), dict))


def _wrapper_call(f):
    """The wrapper's call that `f` is, or that `f` (a streamed call installed before) replaced; else None."""
    replaced = getattr(f, _REPLACED, None)
    if replaced is not None:
        return replaced
    return f if _is_wrapper_call(f) else None


def _locate_call(graph):
    """(the closure cell holding the wrapper's call, or None for the graph's attribute itself; the call)."""
    top = graph.current_callable
    if (call := _wrapper_call(top)) is not None:
        return None, call
    frontier, seen = [top], set()
    for _ in range(4):
        nxt = []
        for f in frontier:
            if id(f) in seen:
                continue
            seen.add(id(f))
            for cell in getattr(getattr(f, "__func__", f), "__closure__", None) or ():
                try:
                    v = cell.cell_contents
                except ValueError:
                    continue
                if (call := _wrapper_call(v)) is not None:
                    return cell, call
                if callable(v):
                    nxt.append(v)
        frontier = nxt
    raise WrapperFormatError("the compiled graph's call was not found inside its current callable")


def apply_kernel_streams(programs, kernels: KernelStreams, device) -> KernelProgram | None:
    """Put the plan's single program's kernels on the plan's streams. Returns the opened program, or None (with
    a warning) when the schedule is not for this program: it then runs as compiled, on one stream."""
    if len(programs) != 1:
        raise KernelScheduleError(f"a kernel-mode plan has one segment, found {len(programs)}")
    try:
        opened = KernelProgram(programs[0].fn)
        if opened.wrapper.digest != kernels.call_digest:
            raise KernelScheduleError("the plan's kernel schedule was made for another compiled program "
                                      f"(digest {kernels.call_digest[:12]}, this one is "
                                      f"{opened.wrapper.digest[:12]})")
        check_schedule(opened.wrapper, kernels.stream, kernels.launch_order)
        opened.install(kernels.stream, kernels.launch_order, device, priority=kernels.priority)
    except (WrapperFormatError, KernelScheduleError) as e:
        warnings.warn(f"kernel streams not applied, the program runs on one stream: {e}", stacklevel=3)
        return None
    return opened
