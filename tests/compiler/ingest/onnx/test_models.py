"""Real models exported by both torch.onnx exporters, compiled for the CPU, against onnxruntime within 1e-4."""
from __future__ import annotations

import warnings

import pytest
import torch

from oparac.ingest.onnx_reference import run_onnxruntime

from helpers.onnx_models import rel_error, run_opara

VISION_SMALL = ["mobilenet_v3_small"]
VISION_SLOW = ["resnet50", "googlenet", "mobilenet_v3_large", "densenet121", "inception_v3"]


def vision(name: str):
    import torchvision

    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(weights=None, **kw).eval()
    size = 299 if name == "inception_v3" else 224
    return model, (torch.randn(1, 3, size, size),), ["x"]


class BertEncoder(torch.nn.Module):
    def __init__(self, layers: int) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.bert = BertModel(BertConfig(num_hidden_layers=layers)).eval()

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class RobertaEncoder(torch.nn.Module):
    def __init__(self, layers: int) -> None:
        super().__init__()
        from transformers import RobertaConfig, RobertaModel

        self.roberta = RobertaModel(RobertaConfig(num_hidden_layers=layers)).eval()

    def forward(self, input_ids, attention_mask):
        return self.roberta(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def roberta(layers: int):
    """Its position ids are a CumSum over the non-padding mask, in both exporters' output."""
    ids = torch.randint(3, 1000, (1, 16))
    ids[0, -3:] = 1  # padding: position ids restart past it
    mask = torch.ones(1, 16, dtype=torch.long)
    return RobertaEncoder(layers).eval(), (ids, mask), ["input_ids", "attention_mask"]


def bert(layers: int):
    ids = torch.randint(0, 1000, (1, 16))
    mask = torch.ones(1, 16, dtype=torch.long)
    return BertEncoder(layers).eval(), (ids, mask), ["input_ids", "attention_mask"]


def export_and_check(made, dynamo: bool, tmp_path):
    torch.manual_seed(0)
    model, args, names = made
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), input_names=names, dynamo=dynamo)
    _, got = run_opara(path, [a.numpy() for a in args])
    want = run_onnxruntime(path, list(args))
    assert rel_error(got, want) <= 1e-4
    return path


def op_types(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


EXPORTERS = [pytest.param(False, id="legacy"), pytest.param(True, id="dynamo")]


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", VISION_SMALL)
def test_small_vision_model(name, dynamo, tmp_path):
    export_and_check(vision(name), dynamo, tmp_path)


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_bert_two_layers(dynamo, tmp_path):
    pytest.importorskip("transformers")
    export_and_check(bert(2), dynamo, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", VISION_SLOW)
def test_vision_model(name, dynamo, tmp_path):
    export_and_check(vision(name), dynamo, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_bert_base_encoder(dynamo, tmp_path):
    pytest.importorskip("transformers")
    export_and_check(bert(12), dynamo, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_swin_t(dynamo, tmp_path):
    """Swin-T's shifted-window attention mask is built with ScatterND (folded at compile time)."""
    assert "ScatterND" in op_types(export_and_check(vision("swin_t"), dynamo, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_roberta_two_layers(dynamo, tmp_path):
    pytest.importorskip("transformers")
    assert "CumSum" in op_types(export_and_check(roberta(2), dynamo, tmp_path))
