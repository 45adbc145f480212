"""Inductor's wrapper code as a DAG of kernel launches: which statements launch GPU work, and what each reads and
writes, so that the launches can be put on several streams (the kernel-level fused mode, docs/design.md section 6.1).

Inductor compiles a graph into a Python module whose `call(args)` allocates buffers and launches its fused
Triton kernels and extern calls (cuBLAS, cuDNN, attention) one after another on one stream. The statements of
its device block are classified here:

- alloc  `buf3 = empty_strided_cuda(...)`: a new storage; host only.
- alias  `buf13 = reinterpret_tensor(buf12, ...)`, `buf8 = buf7[0]`, `buf244 = buf233`: a new name for an
  existing storage; host only.
- kernel a Triton launch (`k.run(..., stream=stream0)`: what it writes comes from the kernel's parameter names,
  in_ptr / out_ptr / in_out_ptr), an extern call writing its `out=`, or a call whose result is a new storage (an
  ATen fallback such as attention) or, for a view spelled as a method or an ATen view op, the viewed storage
  (ordered as a write to it). Any other call is taken to read and write every tensor it names.
- check  `assert_size_stride(...)`, `assert_alignment(...)`: host only, after the names it checks.
- drop   `stream0 = get_raw_stream(0)` and `del x`: the streams are ours, and inductor's frees assume one
  stream; kernel_streams writes its own `del`s on several streams (once no other stream may still use the
  buffer), and the one-stream program in its own order keeps the original ones.
- barrier anything else: it runs where it stood, after every earlier launch and before every later one.

Dependencies are between storages, not names, so views and inductor's in-place reuse (a kernel writing into a
dead input's buffer) give the right order: read after write, write after read and write after write.
Everything here is plain parsing of trusted code (the program came from a trusted plan or was compiled here);
it runs nothing.
"""
from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field

ALLOC_FUNCS = frozenset({"empty_strided_cuda", "empty_strided", "empty_strided_cpu"})
ALIAS_FUNCS = frozenset({"reinterpret_tensor"})
CHECK_FUNCS = frozenset({"assert_size_stride", "assert_alignment"})
STREAM_FUNCS = frozenset({"get_raw_stream"})
# Ops and tensor methods whose result may share its input's storage: treated as that storage.
VIEW_OPS = frozenset({"view", "_unsafe_view", "alias", "as_strided", "reshape", "permute", "transpose", "t", "expand",
                      "squeeze", "unsqueeze", "select", "slice", "narrow", "unfold", "diagonal", "split", "chunk",
                      "unbind", "detach", "view_as", "expand_as", "flatten", "unflatten", "movedim", "real", "imag",
                      "view_as_real", "view_as_complex", "contiguous", "__getitem__"})


class WrapperFormatError(ValueError):
    """The wrapper is not in the shape this module reads (another inductor version or configuration)."""


@dataclass
class Statement:
    node: ast.stmt
    kind: str                       # alloc | alias | kernel | check | drop | barrier | host
    defines: tuple[str, ...] = ()   # names this statement binds
    uses: tuple[str, ...] = ()      # tensor names it refers to (host order: they must be bound first)
    reads: frozenset[int] = frozenset()   # storages (kernels and barriers only)
    writes: frozenset[int] = frozenset()
    launch: str = ""                # kernels: 'triton' (takes a stream= argument) or 'torch' (the current stream)
    kernel: int = -1                # index among the kernels, in program order


@dataclass
class WrapperProgram:
    """The parsed `call`: its prologue (unpacking, checks on the arguments), the device block's statements, the
    device block's header, and what comes after it (the return). Read-only once parsed: one parse is shared by
    every schedule put on the program (kernel_mode)."""

    prologue: list[ast.stmt]
    device_block: ast.With | None
    statements: list[Statement]
    epilogue: list[ast.stmt]
    arg_names: tuple[str, ...]
    digest: str                     # sha256 of the call's source: what a kernel schedule is made for
    kernels: list[Statement] = field(default_factory=list)
    preds: dict[int, tuple[int, ...]] = field(default_factory=dict)  # kernel -> kernels it must follow
    storage_of: dict[str, int] = field(default_factory=dict)  # tensor name -> storage (the last binding's)
    # The streamed calls compiled from this program, by schedule (kernel_streams.streamed_code): the compiler
    # checks and captures several schedules of one program, and writing a call costs a tenth of a second.
    compiled_calls: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_kernels(self) -> int:
        return len(self.kernels)

    def edges(self) -> list[tuple[int, int]]:
        return [(p, c) for c, ps in self.preds.items() for p in ps]


def call_function(source: str) -> ast.FunctionDef:
    """The wrapper's `call`: a method of its Runner class (torch >= 2.9) or a module-level function."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Runner":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "call":
                    return item
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "call":
            return node
    raise WrapperFormatError("the compiled module has no call function")


def kernel_parameters(source: str) -> dict[str, tuple[str, ...]]:
    """Each Triton kernel's parameter names, from the `name = async_compile.triton('name', '''...''')` blocks."""
    params: dict[str, tuple[str, ...]] = {}
    tree = ast.parse(source)
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
                and node.value.func.attr == "triton" and len(node.value.args) >= 2
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.value.args[:2])):
            continue
        name, text = node.value.args[0].value, node.value.args[1].value
        m = re.search(r"^def\s+" + re.escape(name) + r"\s*\((.*?)\)\s*:", text, re.M | re.S)
        if m:
            params[node.targets[0].id] = tuple(p.split(":")[0].strip() for p in m.group(1).split(",") if p.strip())
    return params


def parse_wrapper(source: str) -> WrapperProgram:
    """The wrapper's call as statements with storage dependencies between its kernels."""
    fn = call_function(source)
    uses_self = fn.args.args and fn.args.args[0].arg == "self"
    if uses_self and any(isinstance(n, ast.Name) and n.id == "self" for n in ast.walk(ast.Module(fn.body, []))):
        raise WrapperFormatError("the compiled call uses its runner's state (graph partitions)")
    digest = hashlib.sha256(ast.unparse(fn).encode()).hexdigest()
    params = kernel_parameters(source)
    body = list(fn.body)
    blocks = [k for k, s in enumerate(body) if isinstance(s, ast.With)]
    if len(blocks) > 1:
        raise WrapperFormatError(f"expected at most one device block in call, found {len(blocks)}")
    if blocks:
        k = blocks[0]
        prologue, block, epilogue = body[:k], body[k], body[k + 1:]
        inner = list(block.body)
    else:  # no device block (a CPU wrapper): everything after the argument checks is the program
        k = next((i for i, s in enumerate(body) if not _is_prologue(s)), len(body))
        ret = [s for s in body[k:] if isinstance(s, ast.Return)]
        prologue, block, epilogue = body[:k], None, ret
        inner = [s for s in body[k:] if not isinstance(s, ast.Return)]
    arg_names = _unpacked_args(prologue)
    prog = WrapperProgram(prologue=prologue, device_block=block, statements=[], epilogue=epilogue,
                          arg_names=arg_names, digest=digest)
    _classify(prog, inner, params)
    _dependencies(prog)
    return prog


def _is_prologue(s: ast.stmt) -> bool:
    if isinstance(s, ast.Assign) and isinstance(s.value, ast.Name) and s.value.id == "args":
        return True
    if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call):
        f = s.value.func
        return (isinstance(f, ast.Name) and f.id in CHECK_FUNCS) or (
            isinstance(f, ast.Attribute) and f.attr == "clear" and isinstance(f.value, ast.Name)
            and f.value.id == "args")
    return False


def _unpacked_args(prologue: list[ast.stmt]) -> tuple[str, ...]:
    for s in prologue:
        if isinstance(s, ast.Assign) and isinstance(s.value, ast.Name) and s.value.id == "args":
            t = s.targets[0]
            if isinstance(t, ast.Tuple):
                return tuple(e.id for e in t.elts if isinstance(e, ast.Name))
            if isinstance(t, ast.Name):
                return (t.id,)
    return ()


def _names(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else ""


class _Storages:
    """Which storage each tensor name refers to."""

    def __init__(self, args: tuple[str, ...]) -> None:
        self.of: dict[str, int] = {}
        self.count = 0
        for a in args:
            self.new(a)

    def new(self, name: str) -> int:
        self.of[name] = self.count
        self.count += 1
        return self.of[name]

    def alias(self, name: str, base: str) -> None:
        self.of[name] = self.of[base]

    def used(self, node: ast.AST) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for n in _names(node) if n in self.of))

    def ids(self, names) -> frozenset[int]:
        return frozenset(self.of[n] for n in names if n in self.of)


def _classify(prog: WrapperProgram, inner: list[ast.stmt], params: dict[str, tuple[str, ...]]) -> None:
    st = _Storages(prog.arg_names)
    out = prog.statements
    for node in inner:
        if isinstance(node, ast.Delete):
            out.append(Statement(node, "drop"))
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            if isinstance(target, ast.Name):
                name = target.id
                if isinstance(value, ast.Call) and _call_name(value) in STREAM_FUNCS:
                    out.append(Statement(node, "drop"))
                    continue
                if isinstance(value, ast.Call) and _call_name(value) in ALLOC_FUNCS:
                    uses = st.used(value)
                    st.new(name)
                    out.append(Statement(node, "alloc", defines=(name,), uses=uses))
                    continue
                base = _alias_base(value)
                if base is not None and base in st.of:
                    st.alias(name, base)
                    out.append(Statement(node, "alias", defines=(name,), uses=st.used(value)))
                    continue
                if isinstance(value, ast.Call):
                    uses = st.used(value)
                    reads = st.ids(uses)
                    viewed = _viewed(value, st)
                    if viewed is not None:  # a view: the result is the viewed storage; ordered as a write to it
                        st.alias(name, viewed)
                        sid = st.of[name]
                    else:  # a call returning a new tensor (or tuple of tensors)
                        sid = st.new(name)
                    out.append(Statement(node, "kernel", defines=(name,), uses=uses, reads=reads,
                                         writes=frozenset({sid}), launch="torch"))
                    continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = node.value
            fname = _call_name(call)
            if fname in CHECK_FUNCS:
                out.append(Statement(node, "check", uses=st.used(call)))
                continue
            if isinstance(call.func, ast.Attribute) and call.func.attr == "set_device":
                out.append(Statement(node, "host"))
                continue
            if (isinstance(call.func, ast.Attribute) and call.func.attr == "run"
                    and isinstance(call.func.value, ast.Name) and any(k.arg == "stream" for k in call.keywords)):
                out.append(_triton_launch(node, call, params.get(call.func.value.id), st))
                continue
            outs = [k.value for k in call.keywords if k.arg == "out"]
            if outs:
                written = st.used(outs[0])
                uses = st.used(call)
                out.append(Statement(node, "kernel", uses=uses, reads=st.ids(uses), writes=st.ids(written),
                                     launch="torch"))
                continue
            uses = st.used(call)  # an unknown call: it may write anything it names
            ids = st.ids(uses)
            out.append(Statement(node, "kernel", uses=uses, reads=ids, writes=ids, launch="torch"))
            continue
        # Anything else keeps its place: it is ordered after every earlier launch and before every later one.
        defined = [t.id for n in ast.walk(node) for t in [n] if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)]
        for name in defined:
            st.new(name)
        out.append(Statement(node, "barrier", defines=tuple(defined), uses=st.used(node), launch="torch"))
    k = 0
    for s in out:
        if s.kind in ("kernel", "barrier"):
            s.kernel = k
            prog.kernels.append(s)
            k += 1
    prog.storage_of = dict(st.of)


def _alias_base(value: ast.expr) -> str | None:
    """The name a host-only view or rebinding refers to, or None."""
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name):
        return value.value.id
    if isinstance(value, ast.Call) and _call_name(value) in ALIAS_FUNCS and value.args \
            and isinstance(value.args[0], ast.Name):
        return value.args[0].id
    return None


def _viewed(call: ast.Call, st: _Storages) -> str | None:
    """The tensor name a view-making call views (`x.view(...)`, `torch.ops.aten.view.dtype(x, ...)`, ...), or
    None. Inductor writes its views as reinterpret_tensor; these are the other spellings a wrapper may hold."""
    f = call.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in st.of:
        return f.value.id if f.attr in VIEW_OPS else None
    text = ast.unparse(f)
    parts = text.split(".")
    if text.startswith(("torch.ops.aten.", "aten.")) and len(parts) >= 2:
        op = parts[-2] if parts[-1] in ("default", "dtype", "int", "Tensor", "self") or parts[-1][0].isupper() \
            else parts[-1]
        if op in VIEW_OPS and call.args and isinstance(call.args[0], ast.Name) and call.args[0].id in st.of:
            return call.args[0].id
    return None


def _triton_launch(node: ast.stmt, call: ast.Call, names: tuple[str, ...] | None, st: _Storages) -> Statement:
    reads: set[int] = set()
    writes: set[int] = set()
    uses = st.used(call)
    for k, arg in enumerate(call.args):
        ids = st.ids(st.used(arg))
        if not ids:
            continue
        param = names[k] if names is not None and k < len(names) else ""
        if param.startswith("in_out_ptr"):
            reads |= ids
            writes |= ids
        elif param.startswith("in_ptr"):
            reads |= ids
        elif param.startswith("out_ptr"):
            writes |= ids
        else:  # a parameter we cannot read: both
            reads |= ids
            writes |= ids
    return Statement(node, "kernel", uses=uses, reads=frozenset(reads), writes=frozenset(writes), launch="triton")


def _dependencies(prog: WrapperProgram) -> None:
    """Kernel k follows kernel j when it reads what j wrote, or writes what j read or wrote since; a barrier
    follows every earlier kernel and precedes every later one."""
    last_write: dict[int, int] = {}
    readers: dict[int, list[int]] = {}
    last_barrier = -1
    since_barrier: list[int] = []
    for s in prog.kernels:
        k = s.kernel
        preds: set[int] = set()
        if s.kind == "barrier":
            preds.update(since_barrier)
            if last_barrier >= 0:
                preds.add(last_barrier)
            last_barrier, since_barrier = k, []
            for sid in list(last_write):
                last_write[sid] = k
            readers.clear()
        else:
            if last_barrier >= 0:
                preds.add(last_barrier)
            for sid in s.reads:
                if sid in last_write:
                    preds.add(last_write[sid])
            for sid in s.writes:
                if sid in last_write:
                    preds.add(last_write[sid])
                preds.update(readers.get(sid, ()))
            for sid in s.reads:
                readers.setdefault(sid, []).append(k)
            for sid in s.writes:
                last_write[sid] = k
                readers[sid] = []
            since_barrier.append(k)
        preds.discard(k)
        prog.preds[k] = tuple(sorted(preds))
