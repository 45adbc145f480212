"""oparac: the Opara compiler. Model -> graph -> profile -> schedule -> plan."""

__all__ = ["compile"]


def __getattr__(name):
    # Lazy so that `oparac --help` does not pay for importing torch.
    if name == "compile":
        from oparac.pipeline import compile

        return compile
    raise AttributeError(f"module 'oparac' has no attribute {name!r}")
