"""Plan codec: round trip, determinism, atomic save, and refusal of everything that is not a plan."""
from __future__ import annotations

import dataclasses
import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opara_plan import (SCHEMA_VERSION, PlanFormatError, load_plan, plan_from_bytes, plan_to_bytes, save_plan,
                        validate)

from helpers.plans import make_tiny_plan


def test_round_trip_is_identity(tiny_plan):
    data = plan_to_bytes(tiny_plan)
    assert plan_from_bytes(data) == tiny_plan
    assert plan_to_bytes(plan_from_bytes(data)) == data


def test_bytes_are_deterministic(tiny_plan):
    assert plan_to_bytes(make_tiny_plan()) == plan_to_bytes(tiny_plan)


def test_save_is_atomic_and_leaves_no_temp_files(tiny_plan, tmp_path):
    path = tmp_path / "sub" / "m.plan"
    save_plan(tiny_plan, path)
    assert load_plan(path) == tiny_plan
    assert os.listdir(path.parent) == ["m.plan"]


def test_failed_save_keeps_the_old_file(tiny_plan, tmp_path, monkeypatch):
    path = tmp_path / "m.plan"
    save_plan(tiny_plan, path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_plan(tiny_plan, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.plan"]


def test_unknown_major_version_is_refused(tiny_plan):
    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    obj["schema_version"] = [SCHEMA_VERSION[0] + 1, 0]
    with pytest.raises(PlanFormatError, match="major version"):
        plan_from_bytes(msgpack.packb(obj))


def test_newer_minor_version_with_unknown_keys_is_read(tiny_plan):
    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    obj["schema_version"] = [SCHEMA_VERSION[0], SCHEMA_VERSION[1] + 3]
    obj["future_field"] = {"anything": [1, 2, 3]}
    obj["schedule"]["future_knob"] = 7
    plan = plan_from_bytes(msgpack.packb(obj))
    assert plan.graph == tiny_plan.graph


@pytest.mark.parametrize("data, match", [
    (b"", "not a readable plan"),
    (b"\x00\x01garbage", "not an Opara plan|not a readable plan"),
    (msgpack.packb([1, 2, 3]), "expected a map"),
    (msgpack.packb({"format": "onnx"}), "format"),
    (b"\xdd\xff\xff\xff\xff", "not a readable plan"),  # array header claiming 4G items
    (b"\xdb\xff\xff\xff\xf0abc", "not a readable plan"),  # string header claiming 4 GB
    (msgpack.packb(msgpack.ExtType(5, b"x")), "not a readable plan|extension"),
])
def test_non_plans_are_refused(data, match):
    with pytest.raises(PlanFormatError, match=match):
        plan_from_bytes(data)


def test_wrong_field_type_names_the_field(tiny_plan):
    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    obj["schedule"]["stream"][3] = "one"
    with pytest.raises(PlanFormatError, match=r"schedule\.stream\[3\]: expected an integer"):
        plan_from_bytes(msgpack.packb(obj))
    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    obj["graph"]["nodes"][2]["args"] = [{"ref": ["x", 0]}]
    with pytest.raises(PlanFormatError, match=r"graph\.nodes\[2\]\.args\[0\]\.ref"):
        plan_from_bytes(msgpack.packb(obj))
    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    del obj["target"]["device_type"]
    with pytest.raises(PlanFormatError, match=r"target\.device_type: missing"):
        plan_from_bytes(msgpack.packb(obj))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PlanFormatError, match="cannot read plan"):
        load_plan(tmp_path / "nope.plan")
    with pytest.raises(PlanFormatError, match="cannot read plan"):
        load_plan(tmp_path)


def _decode_and_validate(data: bytes) -> None:
    try:
        plan = plan_from_bytes(data)
        validate(plan)
    except PlanFormatError:
        pass


def test_every_truncation_is_refused_cleanly(tiny_plan):
    data = plan_to_bytes(tiny_plan)
    for n in range(len(data)):
        with pytest.raises(PlanFormatError):
            validate(plan_from_bytes(data[:n]))


def test_byte_flip_loop_never_raises_anything_else(tiny_plan):
    import random

    data = plan_to_bytes(tiny_plan)
    rng = random.Random(0)
    for _ in range(3000):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        _decode_and_validate(bytes(buf))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_mutations_end_in_plan_format_error(data):
    raw = bytearray(plan_to_bytes(make_tiny_plan()))
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "splice"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        raw[pos] = data.draw(st.integers(0, 255))
    elif kind == "insert":
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete":
        del raw[pos:pos + data.draw(st.integers(1, 16))]
    else:
        raw[pos:] = data.draw(st.binary(max_size=64))
    _decode_and_validate(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                    max_leaves=30))
def test_arbitrary_msgpack_is_refused_cleanly(obj):
    _decode_and_validate(msgpack.packb(obj, use_bin_type=True))


def test_deep_nesting_is_refused(tiny_plan):
    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    deep = 0
    for _ in range(200):
        deep = [deep]
    obj["graph"]["nodes"][2]["args"] = [deep]
    with pytest.raises(PlanFormatError, match="nested deeper"):
        plan_from_bytes(msgpack.packb(obj))


def test_plan_object_api(tiny_plan, tmp_path):
    tiny_plan.save(tmp_path / "p.plan")
    assert type(tiny_plan).from_bytes(tiny_plan.to_bytes()) == tiny_plan
    assert dataclasses.is_dataclass(tiny_plan)


def test_memory_format_round_trips_and_the_default_is_not_written(tiny_plan):
    assert b"memory_format" not in plan_to_bytes(tiny_plan)  # default plans keep the bytes they had
    nhwc = dataclasses.replace(tiny_plan, model=dataclasses.replace(tiny_plan.model, memory_format="channels_last"))
    data = plan_to_bytes(nhwc)
    assert b"memory_format" in data
    assert plan_from_bytes(data) == nhwc
    assert plan_from_bytes(plan_to_bytes(tiny_plan)).model.memory_format == "contiguous"


# ------------------------------------------------------------------ golden bytes and the canonical encoding

def _golden_plans():
    """The suite's plans with a fixed torch version, as 1.2 wrote them (recorded before the 1.3 codec)."""
    from helpers.plans import make_two_device_plan
    from opara_plan import Fusion, Segment

    def fixed(p):
        return dataclasses.replace(p, target=dataclasses.replace(p.target, torch="2.5.0"), schema_version=(1, 2))
    tiny, two = fixed(make_tiny_plan()), fixed(make_two_device_plan())
    fused = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, memory_format="channels_last"),
                                fusion=Fusion(backend="inductor", segments=(
                                    Segment(0, (2,), (), 0.5, 0), Segment(1, (3,), (0,), -1.0, 1),
                                    Segment(0, (4, 5), (1,), -1.0, 0)), cache_key="k",
                                    programs=(b"\x00prog-a", b"prog-b")))
    return {"tiny": tiny, "two-device": two, "fused": fused}


GOLDEN = {  # sha256 of the plan's bytes, its graph fingerprint
    "tiny": ("dacb1ccf9457de4ea2257a8a7393dd3d719d4882c1dbfccd9fe97915fbadd807",
             "sha256:35cff7b96eaf3a6cea6ef06f3a624cd7a69d2a7b7b60acd9ffe859c06a637578"),
    "two-device": ("ac649b46408b8cbf37f93d2d2ca2e0dcc24ebe4dc6f68f1c18650abe4d796a08",
                   "sha256:97c59d3b609612389ae52f80ee9ae4d9eeaef02300d724b3751c6af6f8ff6774"),
    "fused": ("ea61600115002679defddf4880144f7d8199eb113ed06d4fb85c4a737f62f4d6",
              "sha256:35cff7b96eaf3a6cea6ef06f3a624cd7a69d2a7b7b60acd9ffe859c06a637578"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_unsigned_plans_keep_their_golden_bytes_and_fingerprints(name):
    import hashlib

    from opara_plan import graph_fingerprint

    plan = _golden_plans()[name]
    data = plan_to_bytes(plan)
    assert (hashlib.sha256(data).hexdigest(), graph_fingerprint(plan.graph)) == GOLDEN[name]
    assert plan_from_bytes(data) == plan
    # An unsigned 1.6 plan of fusion mode 'segments' without merged weights differs from the 1.2 one in its version
    # only.
    current = dataclasses.replace(plan, schema_version=SCHEMA_VERSION)
    assert SCHEMA_VERSION == (1, 6)
    assert plan_to_bytes(current) == data.replace(b"\xaeschema_version\x92\x01\x02", b"\xaeschema_version\x92\x01\x06")


def test_canonical_value_and_bytes_agree(two_device_plan):
    from opara_plan.canonical import canonical_bytes, canonical_value, write_canonical

    for plan in [*_golden_plans().values(), two_device_plan]:
        data = canonical_bytes(plan)
        assert msgpack.packb(canonical_value(plan), use_bin_type=True) == data == plan_to_bytes(plan)
        pieces = []
        write_canonical(plan, pieces.append)
        assert b"".join(pieces) == data


def test_streamed_bytes_of_a_large_plan_are_the_same_in_pieces(tiny_plan):
    from opara_plan import Fusion
    from opara_plan.canonical import canonical_bytes, write_canonical

    big = dataclasses.replace(tiny_plan, fusion=Fusion(backend="inductor", cache_key="k",
                                                       programs=tuple(bytes([i]) * 1_200_000 for i in range(3))))
    pieces = []
    write_canonical(big, pieces.append)
    assert len(pieces) > 2 and b"".join(pieces) == canonical_bytes(big)


def test_an_int_in_a_float_field_is_written_as_the_float_it_decodes_to(tiny_plan):
    plan = dataclasses.replace(tiny_plan, schedule=dataclasses.replace(tiny_plan.schedule, predicted_ms=3))
    data = plan_to_bytes(plan)
    back = plan_from_bytes(data)
    assert isinstance(back.schedule.predicted_ms, float) and plan_to_bytes(back) == data


def test_records_are_slotted_frozen_and_picklable(tiny_plan):
    import pickle

    node = tiny_plan.graph.nodes[2]
    assert not hasattr(node, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.name = "x"
    assert pickle.loads(pickle.dumps(tiny_plan)) == tiny_plan
    assert hash(node) == hash(dataclasses.replace(node))


def test_a_1_2_plan_loads(tiny_plan, tmp_path):
    obj = msgpack.unpackb(plan_to_bytes(tiny_plan), raw=False)
    obj["schema_version"] = [1, 2]
    path = tmp_path / "old.plan"
    path.write_bytes(msgpack.packb(obj, use_bin_type=True))
    assert load_plan(path) == dataclasses.replace(tiny_plan, schema_version=(1, 2))
