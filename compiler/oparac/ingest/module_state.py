"""The user's model as it came in, after torch.export has traced it.

Compiling a model must not change it. Export is run in eval mode, so each module's training flag is put back.
Non-strict export also replaces each module's list, tuple and dict attributes with equal copies (Conv2d.stride,
LayerNorm.normalized_shape, Swin-T's window_size, ...; seen with torch 2.14), which code comparing them by identity
notices: torch.compile's guard that two Swin-T blocks share one window_size list fails, and a model compiled by
torch.compile before oparac compiled it is compiled again on its next call (a 34 s call on the H200, torch 2.11).
The original objects are put back wherever export left an equal copy; a value export really changed is left as
it is."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def kept_module_state(model: torch.nn.Module):
    """Inside, `model` may be set to eval mode and traced; afterwards every module has its own training flag and,
    where an attribute was replaced by an equal object, the original object again."""
    before = [(m, m.training, dict(vars(m))) for m in model.modules()]
    try:
        yield
    finally:
        for m, training, attrs in before:
            m.training = training
            now = vars(m)
            for name, value in attrs.items():
                if name in now and now[name] is not value and _same_value(now[name], value):
                    now[name] = value


def _same_value(a, b) -> bool:
    """Whether `a` is an equal copy of `b`: same type, and == says so (False where comparing raises or gives no
    single truth value, e.g. containers of tensors)."""
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # tensors inside, or a type whose == is not a plain comparison: leave it alone
        return False
