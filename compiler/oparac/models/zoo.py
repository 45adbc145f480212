"""Built-in models with random weights (nothing is downloaded), as `oparac.models.zoo:NAME` factories."""
from __future__ import annotations

import torch

MODELS = ("googlenet", "inception_v3", "resnet50", "densenet121", "squeezenet", "mobilenet_v3", "nasnet",
          "bert", "inception_timm")


def _seeded(seed: int = 0):
    torch.manual_seed(seed)


def calibrate_batchnorm(model: torch.nn.Module, example: torch.Tensor, steps: int = 1) -> torch.nn.Module:
    """Set BatchNorm statistics from data so activations stay in range (random init reaches 1e12,
    which overflows float16). Real models have such statistics; benchmarks should too. Calibrates on a
    batch of 2 of the example's shape: training-mode BatchNorm needs more than one value per channel."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    data = torch.randn(2, *example.shape[1:])
    with torch.no_grad():
        for _ in range(steps):
            model(data)
    return model.eval()


def googlenet(batch: int = 1):
    import torchvision
    _seeded()
    m = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    x = torch.randn(batch, 3, 224, 224)
    return calibrate_batchnorm(m, x), (x,)


def inception_v3(batch: int = 1):
    import torchvision
    _seeded()
    m = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    x = torch.randn(batch, 3, 299, 299)
    return calibrate_batchnorm(m, x), (x,)


def resnet50(batch: int = 1):
    import torchvision
    _seeded()
    x = torch.randn(batch, 3, 224, 224)
    return calibrate_batchnorm(torchvision.models.resnet50(weights=None), x), (x,)


def densenet121(batch: int = 1):
    import torchvision
    _seeded()
    x = torch.randn(batch, 3, 224, 224)
    return calibrate_batchnorm(torchvision.models.densenet121(weights=None), x), (x,)


def squeezenet(batch: int = 1):
    import torchvision
    _seeded()
    return torchvision.models.squeezenet1_1(weights=None).eval(), (torch.randn(batch, 3, 224, 224),)


def mobilenet_v3(batch: int = 1):
    import torchvision
    _seeded()
    x = torch.randn(batch, 3, 224, 224)
    return calibrate_batchnorm(torchvision.models.mobilenet_v3_small(weights=None), x), (x,)


def mobilenet_v3_large(batch: int = 1):
    import torchvision
    _seeded()
    x = torch.randn(batch, 3, 224, 224)
    return calibrate_batchnorm(torchvision.models.mobilenet_v3_large(weights=None), x), (x,)


def nasnet(batch: int = 1):
    import timm
    _seeded()
    x = torch.randn(batch, 3, 331, 331)
    return calibrate_batchnorm(timm.create_model("nasnetalarge", pretrained=False), x), (x,)


def inception_timm(batch: int = 1):
    """A timm model with branching blocks, small enough for CPU tests."""
    import timm
    _seeded()
    x = torch.randn(batch, 3, 224, 224)
    return calibrate_batchnorm(timm.create_model("inception_v4", pretrained=False), x), (x,)


class BertEncoder(torch.nn.Module):
    """BERT-base from its config with random weights; returns last_hidden_state and pooler_output."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel
        self.bert = BertModel(BertConfig())

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


def bert(batch: int = 1, seq: int = 128):
    _seeded()
    ids = torch.randint(0, 30522, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.int64)
    return BertEncoder().eval(), (ids, mask)


def bert_model(batch: int = 1, seq: int = 128):
    """transformers' BertModel itself (returns a ModelOutput, which plans return as a dict)."""
    from transformers import BertConfig, BertModel
    _seeded()
    return BertModel(BertConfig()).eval(), (torch.randint(0, 30522, (batch, seq)),)
