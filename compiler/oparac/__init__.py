"""oparac: the Opara compiler. Model -> graph -> profile -> schedule -> plan."""
from importlib import metadata

__all__ = ["CompileOptions", "Progress", "__version__", "compile"]

try:
    # The one place the version is written is pyproject.toml; plans record it as Tool.version.
    __version__ = metadata.version("opara")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def __getattr__(name):
    # Lazy so that `oparac --help` does not pay for importing torch.
    if name == "compile":
        from oparac.pipeline import compile

        return compile
    if name == "CompileOptions":
        from oparac.options import CompileOptions

        return CompileOptions
    if name == "Progress":
        from oparac.progress import Progress

        return Progress
    raise AttributeError(f"module 'oparac' has no attribute {name!r}")
