"""What a torch.export failure means for the user: one Opara error carrying the advice that helps, and none of
the partial graph that torch prints to stderr (about 180 KB for a detection model)."""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import sysconfig
import traceback

from opara_plan import ModelError, OparaError, UnsupportedOpError

# torch's pytree refusal of an output (or input) container it cannot flatten.
_UNKNOWN_TYPE = re.compile(r"Found <class '([\w.]+)'> in (output|input)")
# One line of torch's readable graph: `index: "f32[u0, 4]" = torch.ops.aten.index.Tensor(arg0_1, [gt])`.
_GRAPH_LINE = re.compile(r'^\s*\w+: "([^"]*)" = torch\.ops\.([\w.]+)\(')
_SOURCE_LINE = re.compile(r"^\s*# File: (.*)$")
_UNBACKED = re.compile(r"\bu\d+\b")


@contextlib.contextmanager
def quiet_export():
    """Holds back what export writes to stderr; on failure torch prints the partial graph there, which is dropped,
    and anything else (the model's own warnings) is passed on once export is over."""
    held = io.StringIO()
    dump = ""
    try:
        with contextlib.redirect_stderr(held):
            yield
    except Exception as e:
        dump = getattr(e, "partial_fx_graph", "") or ""
        raise
    finally:
        text = held.getvalue()
        if dump:  # printed once by each of export's nested entry points
            text = text.replace(f"{dump}\n", "")
        if text:
            sys.stderr.write(text)


def export_error(e: Exception) -> OparaError:
    """The Opara error for an exception torch.export (or its decompositions) raised."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    unknown = _UNKNOWN_TYPE.search(text)
    if unknown:
        return _unknown_container(unknown.group(1), unknown.group(2))
    if "data-dependent" in text:
        return UnsupportedOpError(_data_dependent(e, text, first))
    import torch

    if isinstance(e, torch._dynamo.exc.UserError):
        return ModelError(f"torch.export could not trace the model: {first}")
    return ModelError(f"torch.export could not trace the model ({type(e).__name__}): {first}")


def _unknown_container(qualname: str, where: str) -> ModelError:
    name = qualname.rsplit(".", 1)[-1]
    if where == "output" and name.endswith("Cache"):
        return ModelError(f"the model returns a {name} ({qualname}), a key/value cache that a plan cannot hold: "
                          f"pass use_cache=False (model.config.use_cache = False, or from_pretrained(..., "
                          f"use_cache=False)), or compile a wrapper whose forward returns tensors")
    verb = "returns" if where == "output" else "takes"
    return ModelError(f"the model {verb} a {name} ({qualname}), which torch.export cannot flatten into tensors: "
                      f"compile a wrapper whose forward {verb} tensors (or tuples, lists and dicts of tensors)")


def _data_dependent(e: Exception, text: str, first: str) -> str:
    """torch's first line, its 'Caused by' source line, and the op whose output size the guard depends on."""
    reason = first.split(" (unhinted", 1)[0].strip()
    parts = [f"the model has a data-dependent shape, which a CUDA graph cannot hold: {reason}"]
    caused = next((line.strip() for line in text.splitlines() if line.strip().startswith("Caused by:")), "")
    user = _user_frame(e)
    if user or caused:
        parts.append(f"Caused by: {user}" if user else caused)
    origin = _size_origin(getattr(e, "partial_fx_graph", "") or text, set(_UNBACKED.findall(reason)))
    if origin:
        parts.append(origin)
    parts.append("give the model static shapes (e.g. a fixed-size top-k with padding instead of boolean "
                 "masking), or compile the part before the data-dependent op")
    return "; ".join(parts)


def _user_frame(e: Exception) -> str:
    """The model's line that failed, from the traceback: torch's own 'Caused by' cuts the start off long paths
    and, when the guard fires inside a torch function, names that function rather than the model's line."""
    import torch

    skipped = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)),
               sysconfig.get_paths()["stdlib"])
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if frame.filename.startswith("<") or frame.filename.startswith(skipped):
            continue
        code = f" ({frame.line.strip()})" if frame.line else ""
        return f"{frame.filename}:{frame.lineno} in {frame.name}{code}"
    return ""


def _size_origin(graph: str, symbols: set[str]) -> str:
    """'the size u0 comes from aten.index.Tensor (File: det.py:4 in forward, code: keep = boxes[mask])': the first
    op of the partial graph whose output shape holds one of the guard's unbacked sizes."""
    source = ""
    for line in graph.splitlines():
        located = _SOURCE_LINE.match(line)
        if located:
            source = located.group(1).strip()
            continue
        op = _GRAPH_LINE.match(line)
        if not op:
            continue
        found = set(_UNBACKED.findall(op.group(1)))
        if found and (found & symbols or not symbols):
            size = ", ".join(sorted(found & symbols or found))
            where = f" ({source})" if source else ""
            return f"the size {size} comes from {op.group(2)}{where}"
    return ""
