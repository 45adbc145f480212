"""Where a deployment's weights come from: a .pt2, .onnx, state dict (.pt / .pth / .safetensors) or a factory."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from opara_plan import ModelError

PASSED_THROUGH = (".pt2", ".onnx")  # paths opara_runtime.load reads itself
STATE_DICTS = (".pt", ".pth", ".safetensors")


def resolve_weights(source):
    """What opara_runtime.load takes as `model`, from a deployment's `model` argument.

    source: an nn.Module or a dict of tensors (as they are); a path to a .pt2 or .onnx file (read by load); a path
    to a state dict saved with torch.save (read with weights_only=True, so no code in it runs) or a .safetensors
    file; or 'package.module:factory', a callable returning the model or (model, example_inputs), like
    `oparac.models.zoo:googlenet`. The factory is code the operator names, never something a request sends.
    """
    if isinstance(source, (torch.nn.Module, dict)):
        return source
    if not isinstance(source, (str, Path)):
        raise ModelError(f"model: expected an nn.Module, a dict of tensors, a path or 'module:factory', found "
                         f"{type(source).__name__}")
    text = str(source)
    if text.endswith(PASSED_THROUGH):
        return text
    if text.endswith(STATE_DICTS):
        return _state_dict(Path(text))
    if ":" in text and not Path(text).exists():
        return _from_factory(text)
    raise ModelError(f"model {text!r}: expected a path ending in {', '.join(PASSED_THROUGH + STATE_DICTS)} or "
                     f"'package.module:factory'")


def _state_dict(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(f"model {str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused or a corrupt file: both are the operator's to fix, said plainly
        raise ModelError(f"model {str(path)!r}: not a state dict torch.load(weights_only=True) can read ({e})") \
            from None
    if not isinstance(state, dict):
        raise ModelError(f"model {str(path)!r}: expected a state dict (name -> tensor), found "
                         f"{type(state).__name__}")
    return state


def _from_factory(ref: str):
    module_name, _, attr = ref.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ModelError(f"model {ref!r}: cannot import {attr!r} from {module_name!r} ({e})") from None
    made = factory()
    return made[0] if isinstance(made, tuple) else made
