"""oparac: the Opara compiler. Model -> graph -> profile -> schedule -> plan."""
from oparac.pipeline import compile

__all__ = ["compile"]
