"""Decoding with bounded memory: hostile files cost at most 10x their size (measured with tracemalloc), realistic
plans too, and every limit is reported with the file and the field it was hit in."""
from __future__ import annotations

import tracemalloc

import msgpack
import pytest
import torch
from torch import nn

from opara_plan import OparaError, PlanFormatError, load_plan, plan_from_bytes, plan_to_bytes, validate
from opara_plan.canonical import canonical_value
from opara_plan.decoding import MAX_DIMS, MAX_RECORD_KEYS, MAX_STRING_BYTES

from helpers.plans import make_tiny_plan

MiB = 1 << 20
# What msgpack's Unpacker object itself takes (its parse stack is part of the object), whatever the file.
UNPACKER_BYTES = 64 * 1024
_MARK = "\x00hostile\x00"


def peak_memory(fn, *args):
    """(result or the OparaError raised, peak bytes traced while fn ran, beyond what was held before)."""
    validate(plan_from_bytes(plan_to_bytes(make_tiny_plan())))  # warm: first calls build caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            out = fn(*args)
        except OparaError as e:
            out = e
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def hostile(edit, payload: bytes) -> bytes:
    """The tiny plan with the value that edit(obj) marks replaced by raw msgpack payload."""
    obj = canonical_value(make_tiny_plan())
    edit(obj)
    data = msgpack.packb(obj, use_bin_type=True)
    mark = msgpack.packb(_MARK)
    assert data.count(mark) == 1
    return data.replace(mark, payload)


def array(n: int, item: bytes) -> bytes:
    """A msgpack array of n copies of one encoded item."""
    return b"\xdd" + n.to_bytes(4, "big") + item * n


def arg0(obj):
    """Mark the first argument of node 2."""
    obj["graph"]["nodes"][2]["args"] = [_MARK]


def all_nodes(obj):
    """Mark the whole node list."""
    obj["graph"]["nodes"] = _MARK


def node_bytes(node: dict) -> bytes:
    return msgpack.packb(node, use_bin_type=True)


def _deep(depth: int) -> bytes:
    return b"\x91" * depth + b"\x00"


_EMPTIES_NODE = b"\x83\xa4args\xdc\x00\x80" + b"\x90" * 128 + b"\xa4kind\xa2op\xa4name\xa0"
_NESTED_NODE = b"\x83\xa4args\x91" + _deep(15) + b"\xa4kind\xa2op\xa4name\xa0"

# Each half a MiB or more: enough that what decoding costs whatever the file (msgpack's unpacker) is noise.
HOSTILE = {
    "a million empty arrays in one argument": lambda: hostile(arg0, array(MiB, b"\x90")),
    "empty arrays spread over many nodes": lambda: hostile(all_nodes, array(4_000, _EMPTIES_NODE)),
    "arguments nested 16 deep in many nodes": lambda: hostile(all_nodes, array(15_000, _NESTED_NODE)),
    "an argument nested half a million deep": lambda: hostile(arg0, _deep(MiB // 2)),
    "many tiny nodes": lambda: hostile(all_nodes, array(40_000, node_bytes({"kind": "input", "name": ""}))),
    "many distinct short strings": lambda: hostile(arg0, b"\xdd" + (100_000).to_bytes(4, "big") + b"".join(
        msgpack.packb(f"{i:05x}") for i in range(100_000))),
    "many large integers": lambda: hostile(arg0, array(150_000, b"\xce\x7f\xff\xff\xff")),
    "many floats": lambda: hostile(arg0, array(70_000, msgpack.packb(1.5))),
    "many refs": lambda: hostile(arg0, array(70_000, msgpack.packb({"ref": [1000, 0]}))),
    "many unknown keys in a record": lambda: _many_keys(),
    "a huge unknown value": lambda: hostile(lambda o: o.update(zzz=_MARK), array(2 * MiB, b"\x90")),
}


def _many_keys() -> bytes:
    """A schedule map claiming 200,000 entries, all unknown keys."""
    obj = canonical_value(make_tiny_plan())
    obj["schedule"] = _MARK
    data = msgpack.packb(obj, use_bin_type=True)
    body = b"\xdf" + (200_000).to_bytes(4, "big") + b"".join(
        msgpack.packb(f"k{i}") + b"\x90" for i in range(200_000))
    return data.replace(msgpack.packb(_MARK), body)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_cost_at_most_10x_their_size(case, tmp_path):
    """load_plan: the file read, decoded and (when it decodes) validated. Every case is refused, but for the
    unknown value, which is skipped unread."""
    data = HOSTILE[case]()
    assert len(data) > 400_000
    path = tmp_path / "hostile.plan"
    path.write_bytes(data)
    out, peak = peak_memory(load_plan, path)
    assert peak <= 10 * len(data), f"{case}: {peak / len(data):.1f}x"
    assert isinstance(out, PlanFormatError) or case == "a huge unknown value"


def test_what_hostile_files_are_told(tmp_path):
    path = tmp_path / "h.plan"
    expect = {
        "a million empty arrays in one argument": r"field graph\.nodes\[2\]\.args\[0\]: decoding needs more memory",
        "empty arrays spread over many nodes": r"field graph\.nodes\[\d+\]\.args: decoding needs more memory",
        "an argument nested half a million deep": r"not a readable plan file: values nested too deeply to read "
                                                  r"\(in field graph\)",
        "many unknown keys in a record": rf"field schedule: expected a Schedule of at most {MAX_RECORD_KEYS} keys",
        "many tiny nodes": r"field graph\.nodes(\[\d+\])?: decoding needs more memory",
        "many refs": r"field graph\.nodes\[2\]\.args\[0\](\[\d+\])?(\.ref)?: decoding needs more memory",
    }
    for case, match in expect.items():
        path.write_bytes(HOSTILE[case]())
        with pytest.raises(PlanFormatError, match=f"^plan {path}: {match}"):
            load_plan(path)


_RSS_PROBE = """
import sys
from opara_plan import OparaError, load_plan

def status(field):  # kB -> bytes; VmHWM is this process's peak (ru_maxrss would carry the parent's over exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

before = status("VmRSS")
try:
    load_plan(sys.argv[1])
except OparaError as e:
    print("refused:", str(e)[:200], file=sys.stderr)
print(status("VmHWM") - before)
"""


@pytest.mark.slow
def test_a_38_mib_file_of_empty_arrays(tmp_path):
    """The file of issue 16, which cost 2.7 GiB of RSS before any check: empty arrays as nodes' arguments, as
    an unknown value and in one argument list. Peak RSS of a fresh process, beyond what it held before."""
    import subprocess
    import sys

    path = tmp_path / "h.plan"
    for data in (hostile(all_nodes, array(38 * MiB // len(_EMPTIES_NODE), _EMPTIES_NODE)),
                 hostile(lambda o: o.update(zzz=_MARK), array(38 * MiB, b"\x90")),
                 hostile(arg0, array(38 * MiB, b"\x90"))):
        path.write_bytes(data)
        run = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path)], capture_output=True, text=True,
                             check=True, timeout=300)
        peak = int(run.stdout.split()[-1])
        assert peak <= 10 * len(data), f"{peak / len(data):.1f}x"


# ------------------------------------------------------------------ realistic plans

class DeepCNN(nn.Module):
    """A stem, then n residual conv-BN blocks: about eleven graph nodes per block."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)) for _ in range(n))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = self.stem(x)
        for block in self.blocks:
            y = torch.relu(y + block(y))
        return self.fc(y.mean((2, 3)))


def _compiled(model, x):
    import oparac

    torch.manual_seed(0)
    return oparac.compile(model.eval(), (x,), device="cpu")


def _check_realistic(plan, tmp_path, slack: int) -> None:
    data = plan_to_bytes(plan)
    out, peak = peak_memory(plan_from_bytes, data)
    assert out == plan
    assert peak <= 10 * len(data) + slack, f"{peak / len(data):.1f}x of {len(data)} bytes"
    path = tmp_path / "m.plan"
    path.write_bytes(data)
    out, peak = peak_memory(load_plan, path)
    assert out == plan
    assert peak <= 10 * len(data) + slack, f"{peak / len(data):.1f}x of {len(data)} bytes"


def test_a_compiled_small_cnn_decodes_within_10x(tmp_path):
    from helpers.models import small_cnn

    model, (x,) = small_cnn()
    _check_realistic(_compiled(model, x), tmp_path, UNPACKER_BYTES)  # a 6 KB plan: the unpacker is most of it


@pytest.mark.slow
def test_a_compiled_deep_cnn_decodes_within_10x(tmp_path):
    plan = _compiled(DeepCNN(80), torch.randn(1, 3, 8, 8))
    assert len(plan.graph.nodes) > 800
    _check_realistic(plan, tmp_path, 0)


# ------------------------------------------------------------------ limits and messages

def _plan_with(edit) -> bytes:
    obj = canonical_value(make_tiny_plan())
    edit(obj)
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize("edit, match", [
    (lambda o: o["graph"]["nodes"][3].update(name="x" * (MAX_STRING_BYTES + 1)),
     rf"graph\.nodes\[3\]\.name: expected a string of at most {MAX_STRING_BYTES} bytes"),
    (lambda o: o["graph"]["nodes"][0]["outputs"][0].update(shape=[1] * (MAX_DIMS + 1)),
     rf"graph\.nodes\[0\]\.outputs\[0\]\.shape: expected at most {MAX_DIMS} items"),
    (lambda o: o["graph"]["nodes"][3].update(outputs={"dtype": "float32"}),
     r"graph\.nodes\[3\]\.outputs: expected an array, found a map of 1 entries"),
    (lambda o: o["graph"]["nodes"][5].update(kwargs=[["alpha"]]),
     r"graph\.nodes\[5\]\.kwargs\[0\]: expected an array of 2 items, found an array of 1 items"),
    (lambda o: o["graph"]["nodes"][5].update(kwargs=[[7, 1]]),
     r"graph\.nodes\[5\]\.kwargs\[0\]\[0\]: expected a string, found integer 7"),
    (lambda o: o["profile"]["ops"][1].update(ms="fast"),
     r"profile\.ops\[1\]\.ms: expected a number, found string 'fast'"),
    (lambda o: o["graph"]["nodes"][2].update(args=[{"sym": ["dtype", 5]}]), r"graph\.nodes\[2\]\.args\[0\]\.sym"),
    (lambda o: o["graph"]["nodes"][2].update(args=[{"zzz": 1}]), r"graph\.nodes\[2\]\.args\[0\]: expected an argument"),
    (lambda o: o["graph"]["nodes"][2].update(data="text"), r"graph\.nodes\[2\]\.data: expected bytes, found string"),
    (lambda o: o["model"].update(output_tree=_nest_tree(50)), r"model\.output_tree(\.children\[0\])+: records nested"),
    (lambda o: o["target"].update({1: 2}), r"field target: expected string keys, found integer 1"),
])
def test_type_and_size_errors_name_the_field(edit, match):
    with pytest.raises(PlanFormatError, match=match):
        plan_from_bytes(_plan_with(edit))


def _nest_tree(depth: int) -> dict:
    tree = {"kind": "tensor"}
    for _ in range(depth):
        tree = {"kind": "tuple", "children": [tree]}
    return tree


def test_load_plan_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "x" / "y.plan"
    path.parent.mkdir()
    path.write_bytes(_plan_with(lambda o: o["graph"]["nodes"][3].update(outputs={"dtype": "float32"})))
    with pytest.raises(PlanFormatError) as e:
        load_plan(path)
    assert str(e.value) == (f"plan {path}: field graph.nodes[3].outputs: expected an array, "
                            f"found a map of 1 entries")
    path.write_bytes(plan_to_bytes(make_tiny_plan())[:-3])
    with pytest.raises(PlanFormatError, match=rf"^plan {path}: not a readable plan file: the data ends early"):
        load_plan(path)


def test_a_repeated_key_is_refused():
    data = plan_to_bytes(make_tiny_plan())
    # Rename the schedule's "max_streams" key to "num_streams", which the schedule also has.
    assert data.count(b"\xabmax_streams") == 1
    with pytest.raises(PlanFormatError, match=r"field schedule\.num_streams: appears twice"):
        plan_from_bytes(data.replace(b"\xabmax_streams", b"\xabnum_streams"))


def test_trailing_bytes_are_refused():
    with pytest.raises(PlanFormatError, match="not a readable plan file: 1 bytes follow the end of the plan"):
        plan_from_bytes(plan_to_bytes(make_tiny_plan()) + b"\x00")


def test_unknown_keys_are_skipped_unread_even_when_long_or_odd():
    obj = canonical_value(make_tiny_plan())
    obj["k" * 1000] = [1, 2, 3]
    obj["schedule"]["future"] = {"nested": [b"bytes", 1.5, None, {"x": msgpack.ExtType(1, b"e")}]}
    plan = plan_from_bytes(msgpack.packb(obj, use_bin_type=True))
    assert plan == make_tiny_plan()


def test_repeated_strings_and_metadata_are_shared():
    plan = plan_from_bytes(plan_to_bytes(make_tiny_plan()))
    metas = [n.outputs[0] for n in plan.graph.nodes if n.outputs and n.outputs[0].shape == (2, 3)]
    assert len(metas) == 5 and all(m is metas[0] for m in metas)
    kinds = [n.kind for n in plan.graph.nodes if n.kind == "op"]
    assert all(k is kinds[0] for k in kinds)
