"""oparac.bench.methods.compiled_runner, the torch.compile baseline: every build is a cold, static compile, also
after the same model class was compiled at another batch in the process (dynamo's automatic dynamic shapes would
otherwise make the batch symbolic). Runs on the CPU through a recording backend."""
from __future__ import annotations

import torch

from oparac.bench.methods import compiled_runner


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).relu()


def test_a_second_batch_of_the_same_model_class_compiles_static():
    graphs = []

    def recording(gm, example_inputs):
        graphs.append([x for x in example_inputs if not isinstance(x, torch.Tensor)])  # SymInts: dynamic dims
        return gm.forward

    for batch in (1, 8):
        model = _Net().eval()
        x = torch.randn(batch, 4)
        run = compiled_runner(model, (x,), backend=recording)
        torch.testing.assert_close(run(x), model(x))
    assert len(graphs) == 2
    assert graphs == [[], []], f"expected two static graphs, found symbolic inputs {graphs}"
