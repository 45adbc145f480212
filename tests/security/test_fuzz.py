"""10,000 structural mutations of a small real plan, re-fingerprinted as an attacker would, each loaded (one in ten
decoded from its bytes first) and run on the CPU: every outcome is an OparaError, or a run that returns what the
plan declares and leaves the weights and the inputs as they were (and, where the mutation changed nothing, matches
eager). Half the mutants have their declared shapes made consistent first, so they reach run time."""
from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter

import torch
import torch.utils._pytree as pytree

import opara_runtime
from opara_plan import DTYPE_SIZES, OparaError, Plan, Ref, Sym, TensorMeta
from opara_plan.allowlist import ALLOWED_OPS
from opara_runtime.bind import weights_of
from helpers.plan_kit import compiled_small, meta_repair, tamper

MUTANTS = 10_000
SEED = 16
MAX_BYTES = 1 << 22  # a bound of the right order for this plan keeps every mutant's run cheap
UNLISTED = ("aten.add_.Tensor", "aten.from_file.default", "aten.copy_.default", "aten.add.out", "aten.rand.default",
            "aten._sparse_coo_tensor_unsafe.default", "aten.empty.memory_format", "prims.add.default", "aten.relu")
STRINGS = ("floor", "trunc", "none", "tanh", "constant", "reflect", "sum", "ij,jk->ik", "i,i->", "x", "", "/etc/passwd")
SYMS = (Sym("dtype", "float16"), Sym("dtype", "int64"), Sym("dtype", "bool"), Sym("dtype", "complex64"),
        Sym("dtype", "qint8"), Sym("layout", "strided"), Sym("layout", "sparse_coo"), Sym("device", "cpu"),
        Sym("device", "cuda:7"), Sym("memory_format", "channels_last"), Sym("memory_format", "contiguous_format"),
        Sym("memory_format", "preserve_format"))


def random_value(rng: random.Random, before: int):
    """A plan argument an attacker might write at a node with `before` earlier nodes."""
    pick = rng.random()
    if pick < 0.3:
        return Ref(rng.randrange(max(before, 1) + 1), rng.choice((0, 0, 0, 1, 2)))
    if pick < 0.5:
        return rng.choice((-2, -1, 0, 1, 2, 3, 6, 8, 1 << 40, -(1 << 62)))
    if pick < 0.6:
        return rng.choice((0.0, 0.5, -1.0, 2.0, 1e30, math.inf, -math.inf, math.nan))
    if pick < 0.65:
        return rng.random() < 0.5
    if pick < 0.7:
        return None
    if pick < 0.77:
        return rng.choice(STRINGS)
    if pick < 0.85:
        return rng.choice(SYMS)
    if pick < 0.95:
        return tuple(rng.choice((-1, 0, 1, 2, 3, 6)) for _ in range(rng.randrange(5)))
    return tuple(Ref(rng.randrange(max(before, 1)), 0) for _ in range(rng.randrange(1, 4)))


def random_shape(rng: random.Random, shape: tuple) -> tuple:
    s = list(shape)
    move = rng.random()
    if move < 0.3 and s:
        k = rng.randrange(len(s))
        s[k] = max(0, s[k] + rng.choice((-1, 1, 2, 5)))
    elif move < 0.45:
        s.append(rng.choice((1, 2, 3)))
    elif move < 0.6 and s:
        s.pop(rng.randrange(len(s)))
    elif move < 0.7 and s:
        s[rng.randrange(len(s))] = rng.choice((0, 10**6, 10**12))
    else:
        rng.shuffle(s)
    return tuple(s)


def mutate(plan: Plan, rng: random.Random, allowed: list) -> Plan:
    nodes = list(plan.graph.nodes)
    ops = [i for i, n in enumerate(nodes) if n.kind == "op"]
    for _ in range(rng.choice((1, 1, 2, 3))):
        move = rng.random()
        i = rng.choice(ops)
        node = nodes[i]
        if move < 0.15:  # another op, almost always an allowed one
            target = rng.choice(UNLISTED) if rng.random() < 0.1 else rng.choice(allowed)
            node = dataclasses.replace(node, target=target)
        elif move < 0.35:  # one positional argument replaced, dropped or added
            args = list(node.args)
            what = rng.random()
            if args and what < 0.7:
                args[rng.randrange(len(args))] = random_value(rng, i)
            elif args and what < 0.85:
                args.pop(rng.randrange(len(args)))
            else:
                args.append(random_value(rng, i))
            node = dataclasses.replace(node, args=tuple(args))
        elif move < 0.45:  # keyword arguments
            kwargs = dict(node.kwargs)
            names = ("alpha", "dtype", "device", "layout", "memory_format", "keepdim", "dim", "out", "approximate",
                     "rounding_mode", "non_blocking", "bogus")
            if kwargs and rng.random() < 0.3:
                kwargs.pop(rng.choice(sorted(kwargs)))
            else:
                kwargs[rng.choice(names)] = random_value(rng, i)
            node = dataclasses.replace(node, kwargs=tuple(sorted(kwargs.items())))
        elif move < 0.6:  # a reference somewhere points elsewhere
            refs = [k for k, a in enumerate(node.args) if isinstance(a, Ref)]
            if refs:
                args = list(node.args)
                args[rng.choice(refs)] = Ref(rng.randrange(len(nodes)), rng.choice((0, 0, 1, 3)))
                node = dataclasses.replace(node, args=tuple(args))
        elif move < 0.75:  # a declared shape, of an op or of a leaf
            i = rng.randrange(len(nodes) - 1)
            node = nodes[i]
            o = rng.randrange(len(node.outputs))
            metas = list(node.outputs)
            metas[o] = TensorMeta(random_shape(rng, metas[o].shape), metas[o].dtype)
            node = dataclasses.replace(node, outputs=tuple(metas))
        elif move < 0.85:  # a declared dtype
            i = rng.randrange(len(nodes) - 1)
            node = nodes[i]
            metas = list(node.outputs)
            metas[0] = TensorMeta(metas[0].shape, rng.choice(sorted(DTYPE_SIZES)))
            node = dataclasses.replace(node, outputs=tuple(metas))
        elif move < 0.9:  # the number of outputs
            node = dataclasses.replace(node, multi=not node.multi) if rng.random() < 0.5 else \
                dataclasses.replace(node, outputs=node.outputs * 2)
        else:  # the graph's outputs
            i = len(nodes) - 1
            out = list(nodes[i].args)
            out[rng.randrange(len(out))] = rng.choice((Ref(rng.randrange(i), rng.choice((0, 1))), 1.5, (Ref(0),)))
            node = dataclasses.replace(nodes[i], args=tuple(out))
        nodes[i] = node
    return tamper(plan, nodes)


def inputs_for(plan: Plan, rng: torch.Generator) -> list[torch.Tensor]:
    made = []
    for spec in plan.model.inputs:
        dtype = getattr(torch, spec.dtype)
        if dtype.is_floating_point:
            made.append(torch.randn(spec.shape, generator=rng).to(dtype))
        elif dtype == torch.bool:
            made.append(torch.rand(spec.shape, generator=rng) > 0.5)
        elif dtype.is_complex:
            made.append(torch.randn(spec.shape, generator=rng).to(dtype))
        else:
            made.append(torch.randint(0, 4, spec.shape, generator=rng).to(dtype))
    return made


def run_mutant(mutant: Plan, original: Plan, weights: dict, eager, gen: torch.Generator, *, from_bytes: bool) -> str:
    """'ran', or raises: OparaError for a refused or failing plan, AssertionError for a broken promise."""
    plan = Plan.from_bytes(mutant.to_bytes()) if from_bytes else mutant  # as it arrives from storage
    runner = opara_runtime.load(plan, weights, device="cpu", max_bytes=MAX_BYTES)
    xs = inputs_for(plan, gen)
    kept = [x.clone() for x in xs]
    got = pytree.tree_leaves(runner(*xs))
    assert all(torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, equal_nan=True))
               for a, b in zip(xs, kept)), "an input changed"
    for t, spec in zip(got, plan.model.outputs):
        assert isinstance(t, torch.Tensor), f"output {spec.name} is a {type(t).__name__}"
        assert (tuple(t.shape), str(t.dtype).removeprefix("torch.")) == (spec.shape, spec.dtype), \
            f"output {spec.name}: declared {spec.dtype}{list(spec.shape)}, got {t.dtype}{list(t.shape)}"
    if mutant.graph == original.graph:
        want = pytree.tree_leaves(eager(*xs))
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
    return "ran"


def test_ten_thousand_mutations_fail_cleanly_or_run():
    plan, model, inputs = compiled_small()
    weights = {k: v.detach() for k, v in weights_of(model).items()}
    snapshot = {k: v.clone() for k, v in weights.items()}
    rng, gen = random.Random(SEED), torch.Generator().manual_seed(SEED)
    allowed = sorted(ALLOWED_OPS)
    outcomes, broken = Counter(), []
    start = time.perf_counter()
    with torch.no_grad():
        for k in range(MUTANTS):
            mutant = mutate(plan, rng, allowed)
            if rng.random() < 0.5:
                mutant = meta_repair(mutant)  # consistent declared shapes: these reach run time
            try:
                # One in ten also goes through the codec; decoding has its own fuzz in tests/plans.
                outcomes[run_mutant(mutant, plan, weights, model, gen, from_bytes=k % 10 == 0)] += 1
            except OparaError as e:
                outcomes[type(e).__name__] += 1
            except Exception as e:  # anything else is a finding; collect a few before failing
                broken.append(f"mutant {k}: {type(e).__name__}: {str(e)[:300]}")
            if len(broken) >= 10:
                break
    elapsed = time.perf_counter() - start
    for name, w in weights.items():
        assert torch.equal(w, snapshot[name]), f"weight {name} changed"
    assert not broken, "\n".join(broken)
    assert sum(outcomes.values()) == MUTANTS
    assert outcomes["ran"] > MUTANTS // 20 and outcomes["PlanFormatError"] > MUTANTS // 4, outcomes
    print(f"{MUTANTS} mutants in {elapsed:.1f} s: {dict(outcomes)}")
