"""Where a deployment's weights come from: modules and dicts, .pt2/.onnx paths, state dict files, factories."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from opara_plan import ModelError
from opara_runtime.serve.weights import resolve_weights


def test_modules_dicts_and_paths_load_reads_pass_through(tmp_path):
    m = torch.nn.Linear(2, 2)
    assert resolve_weights(m) is m
    d = {"w": torch.ones(1)}
    assert resolve_weights(d) is d
    assert resolve_weights(tmp_path / "m.pt2") == str(tmp_path / "m.pt2")
    assert resolve_weights("model.onnx") == "model.onnx"


def test_state_dict_files(tmp_path):
    state = torch.nn.Linear(2, 2).state_dict()
    torch.save(state, tmp_path / "w.pt")
    save_file(dict(state), tmp_path / "w.safetensors")
    for name in ("w.pt", "w.safetensors"):
        got = resolve_weights(str(tmp_path / name))
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('ran')",))


def test_a_state_dict_that_would_run_code_is_refused(tmp_path):
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(ModelError, match=r"not a state dict torch.load\(weights_only=True\) can read"):
        resolve_weights(str(tmp_path / "evil.pt"))


def test_a_file_of_something_else_is_refused(tmp_path):
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(ModelError, match=r"expected a state dict \(name -> tensor\), found list"):
        resolve_weights(str(tmp_path / "list.pt"))
    with pytest.raises(ModelError, match=r"no such file"):
        resolve_weights(str(tmp_path / "missing.pth"))


def test_factories_by_import_path():
    model = resolve_weights("helpers.models:small_cnn")  # returns (model, inputs): the model is taken
    assert isinstance(model, torch.nn.Module)
    with pytest.raises(ModelError, match=r"model 'helpers.models:nope': cannot import 'nope' from 'helpers.models'"):
        resolve_weights("helpers.models:nope")


@pytest.mark.parametrize("source, message", [
    ("weights.bin", r"expected a path ending in .pt2, .onnx, .pt, .pth, .safetensors or 'package.module:factory'"),
    (3, r"model: expected an nn.Module, a dict of tensors, a path or 'module:factory', found int"),
])
def test_other_sources_are_refused(source, message):
    with pytest.raises(ModelError, match=message):
        resolve_weights(source)
