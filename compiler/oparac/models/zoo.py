"""Built-in models with random weights (nothing is downloaded), as `oparac.models.zoo:NAME` factories."""
from __future__ import annotations

import torch

MODELS = ("googlenet", "inception_v3", "resnet50", "densenet121", "squeezenet", "mobilenet_v3", "nasnet",
          "bert", "inception_timm", "gpt2", "vit_b16", "swin_t", "llama", "efficientnet_b0", "convnext_t",
          "hrnet_w18_small")
# The never-lose suite: model families outside the branchy CNNs that Opara was first measured on.
EXTENDED = ("gpt2", "vit_b16", "swin_t", "llama", "efficientnet_b0", "convnext_t", "hrnet_w18_small")


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


def _torchvision(name: str, batch: int, size: int = 224):
    import torchvision
    _seeded()
    x = torch.randn(batch, 3, size, size)
    return calibrate_batchnorm(getattr(torchvision.models, name)(weights=None), x), (x,)


def vit_b16(batch: int = 1):
    model, inputs = _torchvision("vit_b_16", batch)
    # torchvision zero-initialises the classification head (a trained one is not): the output would be zero
    # whatever the backbone computed, and every comparison against eager would check nothing.
    _seeded(1)
    with torch.no_grad():
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model, inputs


def swin_t(batch: int = 1):
    return _torchvision("swin_t", batch)


def efficientnet_b0(batch: int = 1):
    return _torchvision("efficientnet_b0", batch)


def convnext_t(batch: int = 1):
    return _torchvision("convnext_tiny", batch)


def hrnet_w18_small(batch: int = 1):
    import timm
    _seeded()
    x = torch.randn(batch, 3, 224, 224)
    return calibrate_batchnorm(timm.create_model("hrnet_w18_small", pretrained=False), x), (x,)


class HiddenStates(torch.nn.Module):
    """A transformers decoder's last hidden state from token ids (no KV cache: one full forward)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).last_hidden_state


def gpt2(batch: int = 1, seq: int = 128):
    """GPT-2 small (12 layers, hidden 768) from its config with random weights."""
    from transformers import GPT2Config, GPT2Model
    _seeded()
    config = GPT2Config()
    return HiddenStates(GPT2Model(config)).eval(), (torch.randint(0, config.vocab_size, (batch, seq)),)


def llama(batch: int = 1, seq: int = 128):
    """A Llama-style decoder: 8 layers of hidden 1024, 16 query heads sharing 4 key/value heads (grouped-query
    attention), SwiGLU MLP of 2816, RMSNorm, rotary positions; random weights."""
    from transformers import LlamaConfig, LlamaModel
    _seeded()
    config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048)
    return HiddenStates(LlamaModel(config)).eval(), (torch.randint(0, config.vocab_size, (batch, seq)),)
