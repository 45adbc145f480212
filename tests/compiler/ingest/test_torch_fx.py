"""PyTorch front end: export to functional ATen, FX graphs as given, refusals that name the node."""
from __future__ import annotations

import pytest
import torch

import opara_runtime
import oparac
from opara_plan import ModelError, UnsupportedOpError, plan_to_bytes

from helpers.models import CachingModel, dropper_in_train_mode


class Branches(torch.nn.Module):
    """Three independent branches joined by a concat, with an in-place op and a view inside."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(3, 4, 1)
        self.c = torch.nn.Linear(3, 3)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        a = self.bn(self.a(x)).relu_()
        b = torch.sigmoid(self.b(x))
        c = self.c(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return torch.cat([a, b, c], dim=1).flatten(1)


def _check(model, inputs, rel=1e-5, **options):
    plan = oparac.compile(model, inputs, device="cpu", **options)
    runner = opara_runtime.load(plan, model)
    got = runner(*inputs)
    want = model(*inputs)
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * max(1.0, want.abs().max().item()))
    return plan


def test_branches_module():
    plan = _check(Branches().eval(), (torch.randn(2, 3, 8, 8),))
    assert plan.schedule.num_streams >= 3
    targets = {n.target for n in plan.graph.nodes if n.kind == "op"}
    assert not any(t.split(".")[1].endswith("_") for t in targets), "in-place ops must be functionalised"


def test_same_model_gives_identical_bytes():
    torch.manual_seed(0)
    m = Branches().eval()
    x = torch.randn(1, 3, 8, 8)
    assert plan_to_bytes(oparac.compile(m, (x,), device="cpu")) == plan_to_bytes(oparac.compile(m, (x,), device="cpu"))


def test_new_weights_same_fingerprint():
    x = torch.randn(1, 3, 8, 8)
    p1 = oparac.compile(Branches().eval(), (x,), device="cpu")
    p2 = oparac.compile(Branches().eval(), (x,), device="cpu")
    assert p1.model.fingerprint == p2.model.fingerprint


def test_item_is_refused_naming_the_node():
    class M(torch.nn.Module):
        def forward(self, x):
            return x * x.sum().item()
    with pytest.raises((UnsupportedOpError, ModelError), match="_local_scalar_dense|item|data-dependent"):
        oparac.compile(M(), (torch.randn(3),), device="cpu")


def test_data_dependent_shape_is_refused():
    class M(torch.nn.Module):
        def forward(self, x):
            return torch.nonzero(x)
    with pytest.raises((UnsupportedOpError, ModelError), match="nonzero|data-dependent"):
        oparac.compile(M(), (torch.randn(3),), device="cpu")


def test_structured_outputs_come_back_in_the_models_structure():
    class M(torch.nn.Module):
        def forward(self, x, y):
            return {"sum": x + y, "parts": (x * 2, [y - 1])}
    m = M()
    x, y = torch.randn(2, 2), torch.randn(2, 2)
    plan = oparac.compile(m, (x, y), device="cpu")
    out = opara_runtime.load(plan, m)(x, y)
    assert set(out) == {"sum", "parts"}
    torch.testing.assert_close(out["parts"][1][0], y - 1)
    torch.testing.assert_close(out["sum"], x + y)


def test_aten_graph_module_is_taken_as_is():
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, w):
        return torch.relu(x @ w) + torch.tanh(x @ w)
    x, w = torch.randn(4, 4), torch.randn(4, 4)
    gm = make_fx(f)(x, w)
    plan = oparac.compile(gm, (x, w), device="cpu")
    assert plan.model.source == "fx"
    torch.testing.assert_close(opara_runtime.load(plan, gm)(x, w), f(x, w))


def test_torch_level_graph_module_is_exported():
    gm = torch.fx.symbolic_trace(Branches().eval())
    plan = _check(gm, (torch.randn(1, 3, 8, 8),))
    assert plan.model.source == "torch.export"


def test_non_tensor_inputs_are_refused():
    with pytest.raises(ModelError, match="example input 0: expected a tensor"):
        oparac.compile(Branches(), (3,), device="cpu")
    with pytest.raises(ModelError, match="dtype"):
        oparac.compile(Branches(), (torch.randn(1, 3, 8, 8),), device="cpu", dtype="int8")
    with pytest.raises(ModelError, match="fuse: expected one of"):
        oparac.compile(Branches(), (torch.randn(1, 3, 8, 8),), device="cpu", fuse="tensorrt")
    with pytest.raises(ModelError, match="--tune measures schedules on the GPU"):
        oparac.compile(Branches(), (torch.randn(1, 3, 8, 8),), device="cpu", tune=True)


def test_float16_plan_casts_weights_at_load():
    m = Branches().eval()
    x = torch.randn(1, 3, 8, 8)
    plan = oparac.compile(m, (x,), device="cpu", dtype="bfloat16")
    assert plan.model.precision == "bfloat16"
    assert {n.outputs[0].dtype for n in plan.graph.nodes if n.kind == "param" and n.outputs[0].dtype != "int64"} == {"bfloat16"}
    got = opara_runtime.load(plan, m)(x.bfloat16())
    want = m(x)
    assert ((got.float() - want).abs().max() / want.abs().max()).item() < 5e-2


# ---------------------------------------------------------------- front-end errors that say what to do


def test_cache_output_says_to_pass_use_cache_false():
    with pytest.raises(ModelError, match=r"returns a DynamicCache .*pass use_cache=False .*or compile a wrapper "
                                         r"whose forward returns tensors"):
        oparac.compile(CachingModel(), (torch.randn(2, 4),), device="cpu")
    _check(CachingModel(use_cache=False).eval(), (torch.randn(2, 4),))


def test_cache_output_through_the_cli(tmp_path):
    from click.testing import CliRunner

    from oparac.cli import main

    result = CliRunner().invoke(main, ["compile", "helpers.models:caching_model", "-o", str(tmp_path / "c.plan"),
                                       "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "use_cache=False" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c.plan").exists()


@pytest.mark.slow
def test_tiny_gpt2_with_its_default_cache_and_without():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=32, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 32, (1, 4))
    with pytest.raises(ModelError, match=r"returns a DynamicCache .*use_cache=False"):
        oparac.compile(model, (ids,), device="cpu")
    model.config.use_cache = False
    plan = oparac.compile(model, (ids,), device="cpu")
    got = opara_runtime.load(plan, model)(ids)
    with torch.no_grad():
        torch.testing.assert_close(got["logits"], model(ids).logits)


class Detector(torch.nn.Module):
    """Keeps the boxes whose score passes a threshold: how many is known only from the data."""

    def forward(self, boxes, scores):
        keep = boxes[scores > 0.5]
        flat = keep.reshape(-1)
        if flat.numel() == 0:
            return boxes.sum()
        return flat.sum()


def test_data_dependent_guard_names_the_op_and_the_source_line(capsys):
    with pytest.raises(UnsupportedOpError) as info:
        oparac.compile(Detector(), (torch.randn(8, 4), torch.randn(8)), device="cpu")
    message = str(info.value)
    assert "Could not guard on data-dependent expression Eq(4*u0, 0)" in message
    assert "test_torch_fx.py:" in message.split("Caused by: ")[1].split(" in forward (if flat.numel() == 0:)")[0]
    assert "the size u0 comes from aten.index.Tensor" in message
    assert "keep = boxes[scores > 0.5]" in message  # where that op is in the model's code
    assert "\n" not in message  # one line: no graph dump in the error either
    assert "def forward" not in capsys.readouterr().err  # torch's partial graph is not printed


def test_export_keeps_the_models_own_warnings(capsys):
    class Chatty(torch.nn.Module):
        def forward(self, x):
            import sys

            print("model says hello", file=sys.stderr)
            return x + 1
    _check(Chatty(), (torch.randn(3),))
    assert "model says hello" in capsys.readouterr().err


class TakesAList(torch.nn.Module):
    def forward(self, xs):
        return xs[0] + xs[1]


def test_list_of_tensors_input_is_refused_with_a_hint():
    a, b = torch.randn(3), torch.randn(3)
    with pytest.raises(ModelError, match=r"example input 0: expected a tensor, found a list of 2 items .*compile a "
                                         r"wrapper"):
        oparac.compile(TakesAList(), ([a, b],), device="cpu")
    with pytest.raises(ModelError, match=r"forward\(xs\) takes 1 inputs, 2 tensors were given; if it takes a list "
                                         r"of tensors, plans take tensors only: compile a wrapper"):
        oparac.compile(TakesAList(), (a, b), device="cpu")

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = TakesAList()

        def forward(self, a, b):
            return self.model([a, b])
    _check(Wrapped(), (a, b))


def test_meta_weights_are_refused_naming_the_first():
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(ModelError, match=r"weight '0.weight': expected a tensor with data, found one on the meta "
                                         r"device \(float32\[4, 4\]\); load the real weights"):
        oparac.compile(model, (torch.randn(1, 4),), device="cpu")
    # The remedy the message names: real storage, then the real weights (to_empty alone leaves garbage, even NaN).
    model.to_empty(device="cpu")
    real = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model.load_state_dict(real.state_dict())
    _check(model.eval(), (torch.randn(1, 4),))


def test_meta_weights_of_an_exported_program_are_refused():
    ep = torch.export.export(torch.nn.Linear(4, 4).to("meta"), (torch.randn(1, 4, device="meta"),))
    with pytest.raises(ModelError, match=r"weight 'weight': expected a tensor with data, found one on the meta"):
        oparac.compile(ep, None, device="cpu")


def test_train_mode_warns_and_the_plan_runs_eval_semantics():
    from oparac.models.reference import TrainModeWarning

    model, (x,) = dropper_in_train_mode()
    with pytest.warns(TrainModeWarning, match=r"the model is in train\(\) mode; a plan always runs eval semantics"):
        plan = oparac.compile(model, (x,), device="cpu")
    assert all(m.training for m in model.modules())  # the caller's mode is kept
    got = opara_runtime.load(plan, model)(x)
    torch.testing.assert_close(got, model.eval()(x))  # dropout off, batch norm on running statistics
    model.bn.train()  # a submodule left in train mode counts too
    with pytest.warns(TrainModeWarning, match=r"train\(\) mode \(first: submodule 'bn'\)"):
        oparac.compile(model, (x,), device="cpu")
    assert not model.training and model.bn.training
    model.bn.eval()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainModeWarning)
        oparac.compile(model, (x,), device="cpu")  # in eval mode: nothing to warn about


def test_train_mode_warns_through_the_cli(tmp_path):
    from click.testing import CliRunner

    from oparac.cli import main
    from oparac.models.reference import TrainModeWarning

    with pytest.warns(TrainModeWarning, match=r"the model 'helpers.models:dropper_in_train_mode' is in train\(\)"):
        result = CliRunner().invoke(main, ["compile", "helpers.models:dropper_in_train_mode", "-o",
                                           str(tmp_path / "d.plan"), "--device", "cpu"])
    assert result.exit_code == 0, result.output


class SharedWindow(torch.nn.Module):
    """Two blocks sharing one list attribute, as Swin-T's blocks of a stage share their window_size."""

    def __init__(self):
        super().__init__()
        window = [2, 2]
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))
        for block in self.blocks:
            block.window = window

    def forward(self, x):
        for block in self.blocks:
            x = block(x) * (block.window[0] * block.window[1])
        return x


def test_compiling_leaves_the_model_as_it_came_so_its_torch_compile_is_not_compiled_again():
    # Non-strict export replaces module attributes with equal copies (here the shared list); torch.compile guards
    # on identity, so a model torch.compile had compiled was compiled again after oparac had compiled it.
    model = SharedWindow().eval()
    x = torch.randn(2, 4)
    backend_calls = []

    def counting(gm, example):
        backend_calls.append(gm)
        return gm.forward
    compiled = torch.compile(model, backend=counting)
    with torch.no_grad():
        compiled(x)
    window = model.blocks[0].window
    oparac.compile(model, (x,), device="cpu")
    assert model.blocks[0].window is window and model.blocks[1].window is window
    with torch.no_grad():
        compiled(x)
    assert len(backend_calls) == 1


def test_a_value_export_changed_is_not_put_back():
    from oparac.ingest.module_state import kept_module_state

    m = torch.nn.Linear(2, 2)
    kept, changed, odd = [1, 2], [3], [torch.ones(2)]
    m.kept, m.changed, m.odd = kept, changed, odd
    with kept_module_state(m):
        m.kept, m.changed, m.odd = [1, 2], [4], [torch.ones(2)]
        m.train(False)
    assert m.kept is kept and m.changed == [4] and m.odd is not odd and m.training
