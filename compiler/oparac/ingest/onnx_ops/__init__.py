"""ONNX op lowerings by family; importing the package registers every handler."""
from oparac.ingest.onnx_ops import elementwise, nn, reduce, resize, scatter, shape  # noqa: F401  (registration)
from oparac.ingest.onnx_ops.base import HANDLERS, ONNX_DTYPES, CompileTimeValueError, Context

__all__ = ["HANDLERS", "ONNX_DTYPES", "CompileTimeValueError", "Context"]
