"""Plan codec: round trip, determinism, atomic save, and refusal of everything that is not a plan."""
from __future__ import annotations

import dataclasses
import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_tiny_plan
from opara_plan import (SCHEMA_VERSION, PlanFormatError, load_plan, plan_from_bytes, plan_to_bytes, save_plan,
                        validate)


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
