"""Plan sets: one artifact of a plan per shape bucket. Round trips, shared programs, and tampered or hostile sets."""
from __future__ import annotations

import dataclasses
import random

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from opara_plan import (Fusion, Plan, PlanFormatError, PlanSet, TensorMeta, TensorSpec, cut_segments,
                        graph_fingerprint, load_artifact, load_plan_set, make_plan_set, plan_set_from_bytes,
                        plan_set_to_bytes, save_plan, save_plan_set, validate_plan_set)
from opara_plan.digest import plan_digest
from opara_plan.plan_set import MAX_BUCKETS, PLAN_SET_FORMAT, is_plan_set
from opara_plan.signing import check_signature, sign_plan

from helpers.plans import make_tiny_plan

SHARED = b"a program equal in every bucket"


def at_batch(batch: int, plan: Plan | None = None) -> Plan:
    """The tiny fork-join plan (x[2, 3] @ w[3, 3] ...) with x and every activation at `batch` rows."""
    plan = plan or make_tiny_plan()

    def meta(m: TensorMeta) -> TensorMeta:
        return TensorMeta((batch, *m.shape[1:]), m.dtype) if m.shape == (2, 3) else m
    nodes = tuple(n if n.kind == "param" else dataclasses.replace(n, outputs=tuple(meta(m) for m in n.outputs))
                  for n in plan.graph.nodes)
    graph = dataclasses.replace(plan.graph, nodes=nodes)
    model = dataclasses.replace(plan.model, fingerprint=graph_fingerprint(graph),
                                inputs=(TensorSpec("x", (batch, 3), "float32"),),
                                outputs=(TensorSpec("output_0", (batch, 3), "float32"),))
    return dataclasses.replace(plan, graph=graph, model=model)


def fused(plan: Plan, own: bytes) -> Plan:
    """The plan with two stored programs: one every bucket shares, and one of its own."""
    segments = tuple(dataclasses.replace(s, program=k % 2) for k, s in enumerate(cut_segments(plan.schedule)))
    return dataclasses.replace(plan, fusion=Fusion(backend="inductor", segments=segments, cache_key="torch+gpu",
                                                   programs=(own, SHARED)))


@pytest.fixture
def plan_set() -> PlanSet:
    return make_plan_set([at_batch(b) for b in (4, 1, 2)])


@pytest.fixture
def fused_set() -> PlanSet:
    return make_plan_set([fused(at_batch(b), f"own code of batch {b}".encode()) for b in (1, 2, 4)])


def entries(data: bytes) -> dict:
    return msgpack.unpackb(data, raw=False)


def repack(obj: dict) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_buckets_are_ordered_and_described_by_their_plans(plan_set):
    assert [b.batch for b in plan_set.buckets] == [1, 2, 4]
    assert plan_set.batched_outputs == (0,)  # the output's leading dimension follows the batch
    assert [p.model.inputs[0].shape for p in plan_set.plans] == [(1, 3), (2, 3), (4, 3)]
    assert plan_set.buckets[2].inputs == plan_set.plans[2].model.inputs


def test_round_trip_is_identity_and_deterministic(plan_set, fused_set, tmp_path):
    for ps in (plan_set, fused_set):
        data = plan_set_to_bytes(ps)
        assert data == plan_set_to_bytes(make_plan_set(reversed(ps.plans)))
        assert plan_set_from_bytes(data) == ps
        save_plan_set(ps, tmp_path / "m.plans")
        assert load_plan_set(tmp_path / "m.plans") == ps
        assert [p.name for p in tmp_path.iterdir()] == ["m.plans"]  # atomic: no temp left behind


def test_equal_programs_are_stored_once_and_each_plan_gets_its_own_back(fused_set):
    data = plan_set_to_bytes(fused_set)
    stored = entries(data)["programs"]
    assert sorted(stored) == sorted({SHARED} | {p.fusion.programs[0] for p in fused_set.plans})
    assert data.count(SHARED) == 1
    assert all(b"own code" not in b["plan"] and SHARED not in b["plan"] for b in entries(data)["buckets"])
    back = plan_set_from_bytes(data)
    for before, after in zip(fused_set.plans, back.plans):
        assert after.fusion == before.fusion
        assert plan_digest(after) == plan_digest(before)


def test_signed_plans_stay_signed_through_the_set(fused_set):
    key = ed25519.Ed25519PrivateKey.generate()
    signed = make_plan_set(sign_plan(p, key) for p in fused_set.plans)
    back = plan_set_from_bytes(plan_set_to_bytes(signed))
    assert all(check_signature(p, [key.public_key()]).trusted for p in back.plans)
    # Swapping which code a bucket's segments run changes the plan it rebuilds: its signature no longer holds.
    obj = entries(plan_set_to_bytes(signed))
    obj["buckets"][0]["programs"].reverse()
    swapped = plan_set_from_bytes(repack(obj))
    verdict = check_signature(swapped.plans[0], [key.public_key()])
    assert not verdict.trusted and "altered" in verdict.reason


def test_a_single_bucket_set_and_the_plain_plan_are_told_apart(tmp_path, tiny_plan):
    save_plan(tiny_plan, tmp_path / "one.plan")
    save_plan_set(make_plan_set([tiny_plan]), tmp_path / "set.plan")
    assert load_artifact(tmp_path / "one.plan") == tiny_plan
    loaded = load_artifact(tmp_path / "set.plan")
    assert isinstance(loaded, PlanSet) and loaded.plans == (tiny_plan,)
    assert is_plan_set((tmp_path / "set.plan").read_bytes()) and not is_plan_set(b"\x81\xa6format\xaaopara-plan")
    (tmp_path / "junk.plan").write_bytes(b"not msgpack at all")
    with pytest.raises(PlanFormatError):
        load_artifact(tmp_path / "junk.plan")
    with pytest.raises(PlanFormatError, match="cannot read"):
        load_artifact(tmp_path / "missing.plan")


# ------------------------------------------------------------------ a set must be one model, bucketed


def test_different_weights_are_refused():
    other = at_batch(2)
    nodes = list(other.graph.nodes)
    nodes[1] = dataclasses.replace(nodes[1], name="w2")
    graph = dataclasses.replace(other.graph, nodes=tuple(nodes))
    other = dataclasses.replace(other, graph=graph,
                                model=dataclasses.replace(other.model, fingerprint=graph_fingerprint(graph)))
    with pytest.raises(PlanFormatError, match=r"bucket 1: parameter 'w' is nothing.*share one set of weights"):
        make_plan_set([at_batch(1), other])


def test_different_inputs_precision_and_target_are_refused():
    renamed = at_batch(2)
    renamed = dataclasses.replace(renamed, model=dataclasses.replace(
        renamed.model, inputs=(TensorSpec("y", (2, 3), "float32"),)))
    nodes = list(renamed.graph.nodes)
    nodes[0] = dataclasses.replace(nodes[0], name="y")
    graph = dataclasses.replace(renamed.graph, nodes=tuple(nodes))
    renamed = dataclasses.replace(renamed, graph=graph,
                                  model=dataclasses.replace(renamed.model, fingerprint=graph_fingerprint(graph)))
    with pytest.raises(PlanFormatError, match=r"bucket 1: inputs \(y: float32\[2, 3\]\) are not bucket 0's"):
        make_plan_set([at_batch(1), renamed])
    half = dataclasses.replace(at_batch(2), model=dataclasses.replace(at_batch(2).model, precision="float16"))
    with pytest.raises(PlanFormatError, match="model.precision is 'float16'"):
        make_plan_set([at_batch(1), half])
    gpu = dataclasses.replace(at_batch(2), target=dataclasses.replace(at_batch(2).target, device_type="cuda"))
    with pytest.raises(PlanFormatError, match="a set is compiled for one machine"):
        make_plan_set([at_batch(1), gpu])


def test_equal_buckets_and_wrong_order_are_refused(plan_set):
    with pytest.raises(PlanFormatError, match="buckets must be distinct"):
        make_plan_set([at_batch(2), at_batch(2)])
    swapped = dataclasses.replace(plan_set, buckets=plan_set.buckets[::-1], plans=plan_set.plans[::-1])
    with pytest.raises(PlanFormatError, match="buckets must be distinct and ordered"):
        validate_plan_set(swapped)


def test_an_output_claimed_batched_must_lead_with_the_batch(tiny_plan):
    ps = make_plan_set([tiny_plan], batched_outputs=())
    assert ps.batched_outputs == () and plan_set_from_bytes(plan_set_to_bytes(ps)) == ps
    odd = at_batch(2)
    odd = dataclasses.replace(odd, model=dataclasses.replace(odd.model, outputs=(TensorSpec("output_0", (5, 3),
                                                                                           "float32"),)))
    assert make_plan_set([at_batch(1), odd]).batched_outputs == ()
    with pytest.raises(PlanFormatError, match=r"output 0 of bucket 1 is float32\[5, 3\], its leading dimension is "
                                              r"not the batch 2"):
        make_plan_set([at_batch(1), odd], batched_outputs=(0,))


def test_a_descriptor_that_is_not_its_plans_is_refused(plan_set):
    wrong = dataclasses.replace(plan_set, buckets=(dataclasses.replace(plan_set.buckets[0], batch=3),)
                                + plan_set.buckets[1:])
    with pytest.raises(PlanFormatError, match="bucket 0: the descriptor says batch 3"):
        validate_plan_set(wrong)
    with pytest.raises(PlanFormatError, match="one plan per bucket"):
        validate_plan_set(dataclasses.replace(plan_set, plans=plan_set.plans[:2]))
    with pytest.raises(PlanFormatError, match="expected 1..64 buckets, found 0"):
        validate_plan_set(PlanSet(buckets=(), plans=()))


# ------------------------------------------------------------------ tampered and hostile files


def test_tampered_fields_are_refused_naming_them(fused_set):
    data = plan_set_to_bytes(fused_set)
    cases = [
        (lambda o: o.update(format="opara-plan"), "not an Opara plan set: field format"),
        (lambda o: o.update(schema_version=[2, 0]), "supports major version 1, the set has 2.0"),
        (lambda o: o["buckets"][1].update(batch=3), "bucket 1 field batch: the descriptor says 3"),
        (lambda o: o["buckets"][0]["programs"].__setitem__(0, 99), r"99 is not an index into the set's programs"),
        (lambda o: o["programs"].append(b"unused"), r"programs\[4\]: no bucket uses it"),
        (lambda o: o["buckets"][0]["segment_programs"].pop(), "expected one entry per fused segment"),
        (lambda o: o["buckets"][0]["segment_programs"].__setitem__(0, 7),
         r"bucket 0 \(batch 1\).*fusion.segments\[0\].program"),
        (lambda o: o["buckets"].pop(), r"programs\[3\]: no bucket uses it"),  # the last bucket's own code
        (lambda o: o["buckets"].reverse(), "buckets must be distinct and ordered"),
        (lambda o: o["buckets"][0].pop("plan"), r"buckets\[0\].plan: missing"),
        (lambda o: o["buckets"][0].update(batch="1"), r"buckets\[0\].batch: expected an integer, found a string"),
        (lambda o: o.update(buckets={}), "field buckets: expected an array, found a map"),
        (lambda o: o.pop("buckets"), "field buckets: missing"),
        (lambda o: o.pop("batched_outputs"), "field batched_outputs: missing"),
        (lambda o: o.update(batched_outputs=[3]), "batched_outputs: 3 is not an output"),
        (lambda o: o.update(batched_outputs=[0, 0]), "expected distinct output indices"),
    ]
    for change, match in cases:
        obj = entries(data)
        change(obj)
        with pytest.raises(PlanFormatError, match=match):
            load_set(repack(obj))


def load_set(data: bytes) -> PlanSet:
    ps = plan_set_from_bytes(data)
    validate_plan_set(ps)
    return ps


def test_a_bucket_plan_altered_inside_the_set_is_refused(plan_set):
    obj = entries(plan_set_to_bytes(plan_set))
    inner = msgpack.unpackb(obj["buckets"][1]["plan"], raw=False)
    inner["graph"]["nodes"][3]["target"] = "aten.sigmoid.default"  # the fingerprint no longer matches
    obj["buckets"][1]["plan"] = msgpack.packb(inner, use_bin_type=True)
    with pytest.raises(PlanFormatError, match=r"bucket 1 \(batch 2\).*fingerprint"):
        load_set(repack(obj))
    obj["buckets"][1]["plan"] = b"\x93garbage"
    with pytest.raises(PlanFormatError, match="bucket 1"):
        load_set(repack(obj))


def test_a_plan_that_stores_its_own_programs_is_refused(fused_set):
    obj = entries(plan_set_to_bytes(fused_set))
    obj["buckets"][0]["plan"] = fused_set.plans[0].to_bytes()
    with pytest.raises(PlanFormatError, match="stores compiled programs itself"):
        load_set(repack(obj))


def test_hostile_headers_are_refused_before_anything_is_built():
    head = {"format": PLAN_SET_FORMAT, "schema_version": [1, 0]}
    claims = [
        (b"\x83" + repack(head)[1:] + b"\xa7buckets\xdd\xff\xff\xff\xff", "expected at most 64 items"),
        (b"\x83" + repack(head)[1:] + b"\xa8programs\xdd\xff\xff\xff\xff", "expected at most"),
        (b"\xdf\xff\xff\xff\xff", "expected a map of at most 16 keys"),
        (repack(head | {"buckets": [{"batch": 1, "plan": b"", "programs": [0] * 3}] * (MAX_BUCKETS + 1)}),
         "expected at most 64 items"),
        (b"", "ends early"),
        (repack(head)[:-2], "ends early"),
        (repack(head) + b"\x00", "1 bytes follow its end"),
        (repack([1, 2]), "expected a map, found an array"),
        (repack(head | {"buckets": msgpack.ExtType(1, b"x")}), "expected an array, found a msgpack extension"),
    ]
    for data, match in claims:
        with pytest.raises(PlanFormatError, match=match):
            plan_set_from_bytes(data)


def test_unknown_fields_of_a_later_minor_version_are_skipped(plan_set):
    obj = entries(plan_set_to_bytes(plan_set))
    obj["schema_version"] = [1, 7]
    obj["added_later"] = {"anything": [1, 2, 3]}
    obj["buckets"][0]["also_later"] = "x"
    assert load_set(repack(obj)).plans == plan_set.plans


def test_random_mutations_end_in_plan_format_error_or_a_valid_set(fused_set):
    data = plan_set_to_bytes(fused_set)
    rng = random.Random(0)
    for _ in range(400):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            load_set(bytes(b))
        except PlanFormatError:
            pass
    for cut in range(0, len(data), max(1, len(data) // 150)):
        with pytest.raises(PlanFormatError):
            load_set(data[:cut])
