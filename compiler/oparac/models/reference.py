"""Models named on the command line: .pt2 files, .onnx files and `package.module:factory` references."""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import torch

from opara_plan import ModelError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}


def parse_shapes(text) -> dict[str, tuple[tuple[int, ...], str]]:
    """'x:1x3x224x224,ids:1x128:int64' -> {'x': ((1, 3, 224, 224), 'float32'), 'ids': ((1, 128), 'int64')}.

    The Python API may give a dict instead: {'x': (1, 3, 224, 224)} or {'ids': ((1, 128), 'int64')}.
    """
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    if not text:
        return out
    if isinstance(text, dict):
        return shapes_from_dict(text)
    if not isinstance(text, str):
        raise ModelError(f"shapes: expected a string like 'x:1x3x224x224' or a dict like "
                         f"{{'x': (1, 3, 224, 224)}}, found {type(text).__name__}")
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ModelError(f"--shapes item {item!r}: expected NAME:DxDxD[:DTYPE]")
        dtype = parts[2] if len(parts) == 3 else "float32"
        if dtype not in _DTYPES:
            raise ModelError(f"--shapes item {item!r}: dtype must be one of {sorted(_DTYPES)}")
        try:
            dims = tuple(int(d) for d in parts[1].lower().split("x"))
        except ValueError:
            raise ModelError(f"--shapes item {item!r}: dimensions must be integers like 1x3x224x224") from None
        if any(d <= 0 for d in dims):
            raise ModelError(f"--shapes item {item!r}: dimensions must be positive")
        out[parts[0]] = (dims, dtype)
    return out


def shapes_from_dict(shapes: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """{'x': (1, 3, 224, 224), 'ids': ((1, 128), 'int64')} -> the form parse_shapes returns, checked."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, value in shapes.items():
        where = f"shapes[{name!r}]"
        if not isinstance(name, str) or not name:
            raise ModelError(f"shapes: keys must be input names (non-empty strings), found {name!r}")
        dims, dtype = value, "float32"
        # ((dims...), 'dtype') names the element type too; a bare sequence of ints is a float32 shape.
        if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], str):
            dims, dtype = value
        if dtype not in _DTYPES:
            raise ModelError(f"{where}: dtype must be one of {sorted(_DTYPES)}, found {dtype!r}")
        if not isinstance(dims, (tuple, list, torch.Size)) or not all(
                isinstance(d, int) and not isinstance(d, bool) for d in dims):
            raise ModelError(f"{where}: expected a tuple of positive ints like (1, 3, 224, 224) or "
                             f"((1, 128), 'int64'), found {value!r}")
        if any(d <= 0 for d in dims):
            raise ModelError(f"{where}: dimensions must be positive, found {list(dims)}")
        out[name] = (tuple(dims), dtype)
    return out


def random_input(shape, dtype: torch.dtype, generator: torch.Generator | None = None) -> torch.Tensor:
    """Floats ~ N(0, 1); integers in {0, 1} (valid token ids, token types and masks alike); bools random."""
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    return torch.randint(0, 2, shape, generator=generator, dtype=dtype)


def load_model(ref: str, shapes: str | None = None):
    """Returns (model, example_inputs or None). Example inputs come from the factory or --shapes."""
    given = parse_shapes(shapes)
    if ref.endswith(".onnx"):
        path = Path(ref)
        if not path.is_file():
            raise ModelError(f"model {ref!r}: no such file")
        return path, None
    if ref.endswith(".pt2"):
        return _load_pt2(Path(ref), given)
    if ":" not in ref:
        raise ModelError(f"model {ref!r}: expected a .pt2 file, an .onnx file or package.module:factory")
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelError(f"model {ref!r}: cannot import {module_name!r}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"model {ref!r}: {module_name} has no callable {attr!r}")
    made = factory()
    model, inputs = (made if isinstance(made, tuple) and len(made) == 2 else (made, None))
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model {ref!r}: the factory returned {type(model).__name__}, expected an nn.Module "
                         f"or (nn.Module, example_inputs)")
    if given:
        inputs = tuple(random_input(shape, _DTYPES[dt]) for shape, dt in given.values())
    if inputs is None:
        raise ModelError(f"model {ref!r}: the factory returned no example inputs; give --shapes NAME:1x3x224x224")
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    # Every command (compile, verify, bench) then runs the model as its plan does: in eval mode.
    warn_if_training(model, f"the model {ref!r}")
    return model.eval(), tuple(inputs)


def _load_pt2(path: Path, given):
    if not path.is_file():
        raise ModelError(f"model {str(path)!r}: no such file")
    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        raise ModelError(f"model {str(path)!r}: not a torch.export file ({type(e).__name__}: {e})") from None
    inputs = None
    example = getattr(ep, "example_inputs", None)
    if example is not None:
        inputs = tuple(example[0])
    if given:
        inputs = tuple(random_input(shape, _DTYPES[dt]) for shape, dt in given.values())
    return ep, inputs


class TrainModeWarning(UserWarning):
    """A model was handed over in train() mode; its plan runs eval semantics."""


def warn_if_training(model: torch.nn.Module, what: str) -> None:
    """Plans always run eval semantics (no dropout, batch norm on running statistics); say so when the model
    (or any submodule) was in train mode, since eager calls of it would then give other numbers."""
    training = next((name or "the model" for name, m in model.named_modules() if m.training), None)
    if training is None:
        return
    which = "" if training == "the model" else f" (first: submodule {training!r})"
    warnings.warn(f"{what} is in train() mode{which}; a plan always runs eval semantics (dropout off, batch norm "
                  f"on running statistics), so it is compiled as model.eval(); call model.eval() to silence this",
                  TrainModeWarning, stacklevel=3)
