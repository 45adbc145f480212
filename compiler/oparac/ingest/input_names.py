"""The inputs a PyTorch model takes, by name and count: --shapes is checked against them before any export."""
from __future__ import annotations

import inspect

import torch

from opara_plan import ModelError

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def declared_inputs(model) -> tuple[tuple[str, ...], int] | None:
    """(the names of the model's positional inputs, how many of them are required), or None where its signature
    does not say (forward(*args))."""
    if isinstance(model, torch.export.ExportedProgram):
        from torch.export.graph_signature import InputKind

        names = tuple(spec.arg.name for spec in model.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT)
        return names, len(names)
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # a builtin or C-implemented forward
        return None
    names, required = [], 0
    for p in parameters:
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            return None
        if p.kind in _POSITIONAL:
            names.append(p.name)
            required += p.default is inspect.Parameter.empty
    return tuple(names), required


def check_shapes_fit(model, given: dict, ref: str) -> None:
    """ModelError unless the --shapes names are the model's inputs, as many as it needs, in the order it takes
    them (the example inputs are made from them in that order)."""
    declared = declared_inputs(model)
    if not given or declared is None:
        return
    names, required = declared
    takes = f"it takes {', '.join(names)}" if names else "it takes no inputs"
    unknown = [n for n in given if n not in names]
    if unknown:
        which = "is not an input" if len(unknown) == 1 else "are not inputs"
        raise ModelError(f"--shapes names {', '.join(map(repr, unknown))}, which {which} of model {ref!r}; {takes}")
    listed = list(given)
    if len(listed) < required:
        raise ModelError(f"--shapes gives {len(listed)} input{'s' if len(listed) != 1 else ''} ({', '.join(listed)}); "
                         f"model {ref!r} needs {required}: {', '.join(names[:required])}")
    if listed != list(names[:len(listed)]):
        raise ModelError(f"--shapes lists {', '.join(listed)}; give them in the order model {ref!r} takes them: "
                         f"{', '.join(names[:len(listed)])}")
